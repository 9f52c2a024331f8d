"""The unit of σ: [0, 1] everywhere in the package (deepinv's convention), 8-bit grey levels at its edges.

25 grey levels of an 8-bit image is σ = 25/255. The command line takes grey levels, and the manifests,
reports and weights files written for people show them; these two functions convert at those edges.
"""

from __future__ import annotations

from rfr_deploy.errors import ConfigError

GREY_LEVELS = 255.0
"""σ = 1 in grey levels of an 8-bit image."""


def sigma_from_grey(levels: float) -> float:
    """σ in [0, 1] units from 8-bit grey levels (the command line's unit): 25 -> 25/255."""
    return levels / GREY_LEVELS


def grey_levels(sigma: float | None, digits: int = 9) -> float | None:
    """σ in 8-bit grey levels (what manifests and reports show) from [0, 1] units; None stays None.

    Rounded to ``digits`` decimals, so a level given in grey levels reads back as it was typed
    (25/255 · 255 is 25.000000000000004 in floating point).
    """
    return None if sigma is None else round(sigma * GREY_LEVELS, digits)


def check_levels(levels: dict[str, float | None]) -> None:
    """:class:`ConfigError` naming the first option of ``levels`` (option name → σ in [0, 1] units, None
    for unset) outside [0, 1], or ``--sigma-low`` above ``--sigma-high`` where both are given."""
    for option, value in levels.items():
        if value is not None and not 0 <= value <= 1:
            raise ConfigError(f"--{option} must be within [0, 255] grey levels, got {grey_levels(value)}")
    low, high = levels.get("sigma-low"), levels.get("sigma-high")
    if low is not None and high is not None and low > high:
        raise ConfigError(f"--sigma-low {grey_levels(low):g} is above --sigma-high {grey_levels(high):g}")
