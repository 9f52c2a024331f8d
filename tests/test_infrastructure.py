"""The shared base helpers: one line from an error, optional packages, the square side that fits."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from rfr_deploy.errors import WeightsError, first_line
from rfr_deploy.files import json_text
from rfr_deploy.memory import side_that_fits
from rfr_deploy.metrics import ssim
from rfr_deploy.optional import is_installed


def test_first_line_quotes_the_first_non_blank_line():
    assert first_line(RuntimeError("\n  cannot read  \nbecause of this\n")) == "cannot read"
    assert first_line(KeyError()) == "KeyError"
    assert first_line(ValueError("bad value"), typed=True) == "ValueError: bad value"
    assert first_line(ValueError("  "), typed=True) == "ValueError"
    assert first_line(WeightsError("x" * 300), limit=240) == "x" * 237 + "..."
    assert first_line("Not Found") == "Not Found"  # a reason given as text


def test_is_installed_finds_without_importing():
    assert is_installed("json", "pytest") and not is_installed("json", "no_such_package_here")


def test_side_that_fits_rounds_down_and_keeps_a_floor():
    assert side_that_fits(4.0, 100 * 100, 4.0 * 100 * 100, 8, 32) is None  # fits exactly
    assert side_that_fits(4.0, 1000 * 1000, 4.0 * 100 * 100, 8, 32) == 96  # 100 -> multiple of 8
    assert side_that_fits(4.0, 1000 * 1000, 4.0 * 10 * 10, 8, 32) == 32  # never below the floor


def test_ssim_scores_images_smaller_than_its_window():
    rng = np.random.default_rng(0)
    for shape in ((7, 13, 1), (10, 10, 3), (11, 11, 1), (32, 32, 3)):  # the 11² Gaussian window from 11 on
        clean = rng.random(shape)
        noisy = np.clip(clean + 0.1 * rng.standard_normal(shape), 0, 1)
        assert ssim(clean, clean) == pytest.approx(1.0)
        assert 0 < ssim(noisy, clean) < 1
    assert math.isnan(ssim(np.zeros((2, 5, 1)), np.zeros((2, 5, 1))))  # no window fits


def test_json_text_is_strict_json():
    data = {"psnr": math.inf, "ssim": math.nan, "rows": [(1.5, -math.inf)], "name": "a"}
    text = json_text(data)
    assert json.loads(text) == {"psnr": None, "ssim": None, "rows": [[1.5, None]], "name": "a"}
    assert "Infinity" not in text and "NaN" not in text
