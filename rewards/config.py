"""`RewardConfig`: which reward terms count, with what weight, and the presets.

Flat fields so that every knob is one ``key=value`` override on the command line
(``--override granularity_weight=0.5 --override answer_tag=answer``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Iterable

from skinr1.config.checks import SettingError
from skinr1.prompts.format import MODES, AnswerFormat

MALIGNANCY_SOURCES = ("stated", "node", "stated_or_node")
MALIGNANCY_CLASS_COUNTS = (3, 4)

PRESETS: dict[str, dict[str, Any]] = {
    # The paper: multiple choice; format 1.0 + granularity 0.75 + malignancy 0.25 = 2.0.
    "paper": {"mode": "choice"},
    # Open question: format 1.0 + hierarchical 0.75 + malignancy 0.25 = 2.0.
    "open": {"mode": "open"},
}

_WEIGHT_FIELDS = ("format_weight", "hierarchical_weight", "granularity_weight", "malignancy_weight", "differential_weight")


@dataclass(frozen=True)
class RewardConfig:
    """Reward terms and weights. The defaults are the paper's preset."""

    mode: str = "choice"
    """Question mode the rewards score: "choice" (granularity term) or "open" (hierarchical term)."""

    format_weight: float = 1.0
    """Reward for exactly one non-empty reasoning block followed by one answer block."""

    hierarchical_weight: float = 0.75
    """Open mode: weight x (weighted depth of LCA(prediction, truth) / weighted depth of the truth)."""

    partial_credit: bool = True
    """Open mode: credit along the truth's path (a right category or group earns its share when
    the disease is wrong). False: all or nothing, the full weight only for the labelled node or a
    subtype of it (the binary-reward ablation)."""

    granularity_weight: float = 0.75
    """Choice mode: weight x (depth of the chosen correct option / depth of the deepest correct option)."""

    malignancy_weight: float = 0.25
    """Reward for the right malignancy class (how many classes: `malignancy_classes`)."""

    differential_weight: float = 0.0
    """Reward when the reasoning names at least one DDx neighbour of the truth (0 = off)."""

    level_weights: tuple[float, ...] = ()
    """Hierarchical term: weight of depth 1, 2, 3...; the last one repeats for deeper levels.
    Empty = every level counts the same (credit = LCA depth / truth depth)."""

    malignancy_source: str = "stated"
    """Where the malignancy term reads the class: "stated" (the answer's parentheses, the paper),
    "node" (the class of the predicted node), or "stated_or_node" (stated if given, else the node's)."""

    malignancy_classes: int = 4
    """Classes the malignancy term tells apart: 4 = benign / precancerous / malignant /
    non-neoplastic, as the taxonomy labels them; 3 = the paper's benign / precancerous / malignant,
    where non-neoplastic counts as benign (either word is right for either kind of lesion)."""

    require_format_for_content: bool = False
    """When True, every term but format scores 0 unless the format is right. Off by default, as in
    the paper, where the terms are summed independently."""

    reasoning_tag: str = "thinking"
    """Reasoning tag name (see skinr1.prompts.AnswerFormat)."""

    answer_tag: str = "final diagnosis"
    """Answer tag name (see skinr1.prompts.AnswerFormat)."""

    max_answer_chars: int = 500
    """Longest answer block accepted; longer is "answer_too_long" (format and content fail)."""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise SettingError("mode", f"must be one of {', '.join(MODES)}, got {self.mode!r}")
        for name in _WEIGHT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise SettingError(name, f"must be a finite number >= 0, got {value!r}")
        object.__setattr__(self, "level_weights", tuple(self.level_weights))
        for value in self.level_weights:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise SettingError("level_weights", f"must be finite numbers > 0, got {self.level_weights!r}")
        if self.malignancy_source not in MALIGNANCY_SOURCES:
            raise SettingError("malignancy_source", f"must be one of {MALIGNANCY_SOURCES}, got {self.malignancy_source!r}")
        if isinstance(self.malignancy_classes, bool) or self.malignancy_classes not in MALIGNANCY_CLASS_COUNTS:
            raise SettingError("malignancy_classes", f"must be 3 or 4, got {self.malignancy_classes!r}")
        self.answer_format  # validates the tags and the length limit

    # ----------------------------------------------------------------- derived
    @property
    def answer_format(self) -> AnswerFormat:
        return AnswerFormat(self.reasoning_tag, self.answer_tag, self.max_answer_chars)

    @property
    def accuracy_component(self) -> str:
        """The mode's accuracy term: "granularity" (choice) or "hierarchical" (open)."""
        return "granularity" if self.mode == "choice" else "hierarchical"

    @property
    def components(self) -> tuple[str, ...]:
        """Terms reported in every breakdown (differential only when it has a weight)."""
        names = ("format", self.accuracy_component, "malignancy")
        return names + ("differential",) if self.differential_weight > 0 else names

    def weight(self, component: str) -> float:
        return float(getattr(self, f"{component}_weight"))

    @property
    def max_reward(self) -> float:
        return sum(self.weight(c) for c in self.components)

    # ----------------------------------------------------------------- construction
    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "RewardConfig":
        if name not in PRESETS:
            raise ValueError(f"unknown reward preset {name!r}; expected one of {', '.join(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    @classmethod
    def from_overrides(cls, preset: str, overrides: Iterable[str] = ()) -> "RewardConfig":
        """A preset with ``key=value`` strings applied (values parsed by the field's type)."""
        return cls.preset(preset, **parse_overrides(overrides))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RewardConfig":
        return cls(**data)


def parse_overrides(overrides: Iterable[str]) -> dict[str, Any]:
    defaults = {f.name: f.default for f in dataclasses.fields(RewardConfig)}
    parsed: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or key not in defaults:
            raise ValueError(f"bad override {item!r}: expected key=value with key one of {', '.join(defaults)}")
        parsed[key] = _coerce(key, raw.strip(), defaults[key])
    return parsed


def _coerce(key: str, raw: str, default: Any) -> Any:
    try:
        if isinstance(default, bool):
            if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(raw)
            return raw.lower() in ("true", "1", "yes")
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, tuple):
            return tuple(float(v) for v in raw.strip("()[]").split(",") if v.strip())
    except ValueError:
        raise ValueError(f"override {key}={raw!r}: expected a {type(default).__name__}") from None
    return raw
