"""Regenerate the bundled sample image (rfr_deploy/data/sample_*.png).

Source: scikit-image's ``rocket`` photograph (SpaceX, released into the public
domain), a 256×256 crop of the launch towers, whose lattice repeats across the
image — the kind of self-similarity restore-from-restored exploits. The noisy
version adds Gaussian noise of σ = 25 grey levels (seed 0) and is stored as
8-bit PNG, exactly as a user's noisy photo would arrive.

    python benchmarks/make_sample.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from rfr_deploy.images import quantize, write_image

DATA = Path(__file__).resolve().parent.parent / "rfr_deploy" / "data"
SIGMA = 25.0
SEED = 0


def main() -> None:
    argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    ).parse_args()
    from skimage import data

    clean = data.rocket()[150:406, 384:640].astype(np.float32) / 255.0
    noise = np.random.default_rng(SEED).standard_normal(clean.shape).astype(np.float32) * (SIGMA / 255.0)
    write_image(DATA / "sample_clean.png", clean)
    write_image(DATA / "sample_noisy.png", quantize(clean + noise))
    print(f"wrote {DATA / 'sample_clean.png'} and {DATA / 'sample_noisy.png'} (σ = {SIGMA:g}, seed {SEED})")


if __name__ == "__main__":
    main()
