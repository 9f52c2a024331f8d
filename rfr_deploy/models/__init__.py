"""Denoising networks: the registry, the factory, weights files and the zoo of architectures."""
