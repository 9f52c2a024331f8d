"""The shared base helpers: one line from an error, optional packages, the square side that fits."""

from __future__ import annotations

from rfr_deploy.errors import WeightsError, first_line
from rfr_deploy.memory import side_that_fits
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
