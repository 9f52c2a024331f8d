"""Noise models: what the networks were trained for, drawn with an explicit generator, σ in [0, 1]."""
