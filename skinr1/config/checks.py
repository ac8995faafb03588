"""Range checks for config dataclasses, raised where each setting is declared (`__post_init__`).

A failed check raises `SettingError` naming the setting's key: the full dotted key for the run
config's own sections ("rl.checkpoint_every"), the field's name for settings reused under several
sections (`DeepSpeedSettings` sits under sft.deepspeed and rl.learner.deepspeed); the loader
(skinr1.config.loader) puts the section's path in front of those. Floats must be finite: NaN
compares false with every bound, so a plain `value <= 0` check would let it through.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Optional


class SettingError(ValueError):
    """A setting out of its range: `key` (dotted, possibly relative to its section) and `reason`."""

    def __init__(self, key: str, reason: str):
        self.key = key
        self.reason = reason
        super().__init__(f"{key} {reason}")


def _number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SettingError(key, f"must be a number, got {value!r}")
    if not math.isfinite(value):
        raise SettingError(key, f"must be a finite number, got {value!r}")
    return value


def at_least(key: str, value: Any, low: float) -> None:
    """value >= low (and finite)."""
    if _number(key, value) < low:
        raise SettingError(key, f"must be >= {low}, got {value!r}")


def above(key: str, value: Any, low: float) -> None:
    """value > low (and finite)."""
    if _number(key, value) <= low:
        raise SettingError(key, f"must be > {low}, got {value!r}")


def within(key: str, value: Any, low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> None:
    """value in [low, high], with either end open when asked (and finite)."""
    number = _number(key, value)
    too_low = number <= low if low_open else number < low
    too_high = number >= high if high_open else number > high
    if too_low or too_high:
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise SettingError(key, f"must be in {interval}, got {value!r}")


def optional_at_least(key: str, value: Optional[Any], low: float) -> None:
    """None, or value >= low."""
    if value is not None:
        at_least(key, value, low)


def one_of(key: str, value: Any, choices: Iterable[Any]) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise SettingError(key, f"must be one of {choices}, got {value!r}")


def resource_amounts(key: str, amounts: Mapping[str, Any]) -> None:
    """Ray custom resources: each amount finite and >= 0."""
    for name, amount in amounts.items():
        at_least(f"{key}.{name}", amount, 0)
