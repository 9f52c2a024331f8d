"""Jobs over files: adapt-and-export, denoise, evaluate, pretrain, and their manifests."""
