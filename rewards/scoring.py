"""Batch scoring: (completion, sample metadata) -> total reward, per-term breakdown, reason codes.

`build_sample` resolves the ground-truth label when the batch is built, so an unmapped label is a
clear ValueError there and never a silent 0 during training. `RewardScorer.score` never raises on
any completion or sample: bad metadata is "invalid_sample", and anything unexpected becomes reward 0
with the reason "internal_error" (normal paths never get there; the property tests check that).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import lru_cache, partial
from typing import Any, Iterable, Sequence

from rewards.config import RewardConfig
from rewards.functions import (
    ddx_pattern,
    deepest_correct_depth,
    differential_reward,
    format_reward,
    granularity_reward,
    label_classes,
    malignancy_reward,
    path_credit,
)
from skinr1.prompts.choice import ChoiceOption, options_from_labels
from skinr1.prompts.format import check_mode
from skinr1.prompts.parser import parse_completion, resolve_answer
from skinr1.taxonomy import LabelResolver, Taxonomy

log = logging.getLogger(__name__)

_CACHE_SIZE = 1 << 16
_META_KEYS = ("gt_node", "mode", "options", "label", "source")


@dataclass(frozen=True)
class RewardSample:
    """What the reward needs to know about one prompt; shared by the prompt's G completions."""

    gt_node: str
    """Taxonomy node id of the ground truth (already resolved; see `build_sample`)."""
    mode: str
    """"open" or "choice"; must match the RewardConfig's mode."""
    options: tuple[ChoiceOption, ...] = ()
    """The lettered options shown to the model (choice mode)."""
    label: str | None = None
    """The original dataset label, kept for logs."""
    source: str | None = None
    """The source dataset of `label`, kept for logs."""
    option_nodes: tuple[str, ...] = field(init=False, repr=False, compare=False)
    """Node ids of `options` (derived): a cheap cache key for the per-options results."""

    def __post_init__(self) -> None:
        check_mode(self.mode)
        object.__setattr__(self, "options", tuple(self.options))
        object.__setattr__(self, "option_nodes", tuple(o.node_id for o in self.options))
        if self.mode == "choice" and not self.options:
            raise ValueError("a choice-mode sample needs options")
        letters = [o.letter for o in self.options]
        if len(set(letters)) != len(letters):
            raise ValueError(f"duplicate option letters {letters}")

    def validate(self, taxonomy: Taxonomy) -> "RewardSample":
        unknown = [n for n in (self.gt_node, *(o.node_id for o in self.options)) if n not in taxonomy]
        if unknown:
            raise ValueError(f"unknown taxonomy node(s) {unknown}")
        return self

    def to_record(self, completion: str) -> dict[str, Any]:
        """The plain dict the reward actor takes: the completion plus this metadata."""
        return {
            "completion": completion,
            "gt_node": self.gt_node,
            "mode": self.mode,
            "options": [o.to_dict() for o in self.options],
            "label": self.label,
            "source": self.source,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any], taxonomy: Taxonomy) -> "RewardSample":
        """Inverse of `to_record` (ignoring the completion); ValueError for malformed or unknown data."""
        try:
            options = tuple(ChoiceOption.from_dict(o) for o in record.get("options") or ())
            sample = cls(str(record["gt_node"]), str(record["mode"]), options, record.get("label"), record.get("source"))
        except (KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"malformed reward record: {error!r}") from None
        return sample.validate(taxonomy)


def build_sample(
    resolver: LabelResolver,
    label: str,
    mode: str,
    options: Sequence[Any] | None = None,
    source: str | None = None,
) -> RewardSample:
    """Resolve a dataset label (and option texts) into a `RewardSample`; ValueError if it does not map."""
    hit = resolver.resolve(label, source=source)
    if hit.node_id is None:
        where = f" from {source}" if source else ""
        raise ValueError(f"ground-truth label {label!r}{where} does not map to the taxonomy: {hit.reason}")
    resolved = options_from_labels(resolver, list(options), source) if options else []
    return RewardSample(hit.node_id, mode, tuple(resolved), label, hit.source)


@dataclass(slots=True)  # not frozen: frozen __init__ costs ~1 us per result at 10^5 results/s
class RewardResult:
    """One completion's reward."""

    reward: float
    """Weighted sum of the terms, in [0, RewardConfig.max_reward]."""
    components: dict[str, float]
    """Score of each term (already weighted), keyed by RewardConfig.components."""
    reasons: list[str] = field(default_factory=list)
    """One "term:code" per term, e.g. "hierarchical:wrong_category"; or ["internal_error"]."""
    predicted: str | None = None
    """The node the answer resolved to (None when it did not)."""
    error: str | None = None
    """Why a sample could not be scored (invalid metadata or an internal error)."""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"reward": self.reward, "components": self.components, "reasons": self.reasons, "predicted": self.predicted}
        if self.error is not None:
            out["error"] = self.error
        return out


class RewardScorer:
    """Scores completions under one RewardConfig and taxonomy, with per-process caches."""

    def __init__(self, config: RewardConfig | None = None, resolver: LabelResolver | Taxonomy | None = None):
        if resolver is None:
            from skinr1.taxonomy import default_resolver

            resolver = default_resolver()
        self.config = config or RewardConfig()
        self.taxonomy: Taxonomy = resolver.taxonomy if isinstance(resolver, LabelResolver) else resolver
        self.format = self.config.answer_format
        self.components = self.config.components
        self.max_reward = self.config.max_reward
        self._zeros = dict.fromkeys(self.components, 0.0)
        tax = self.taxonomy
        # Model answers repeat a small vocabulary of names, and (prediction, truth) pairs repeat
        # across a batch: caching these turns each completion's scoring into a parse + dict hits.
        self._find = lru_cache(maxsize=_CACHE_SIZE)(tax.find)
        self._credit = lru_cache(maxsize=_CACHE_SIZE)(partial(path_credit, tax, level_weights=self.config.level_weights))
        self._deepest = lru_cache(maxsize=_CACHE_SIZE)(partial(deepest_correct_depth, tax))
        self._granularity = lru_cache(maxsize=_CACHE_SIZE)(partial(granularity_reward, tax))
        self._classes = lru_cache(maxsize=_CACHE_SIZE)(partial(label_classes, tax, classes=self.config.malignancy_classes))
        self._ddx = lru_cache(maxsize=4096)(partial(ddx_pattern, tax))

    # ----------------------------------------------------------------- public
    def score(self, completion: str, sample: RewardSample) -> RewardResult:
        try:
            if sample.mode != self.config.mode:
                return self._invalid(f"sample mode {sample.mode!r} does not match reward mode {self.config.mode!r}")
            if sample.gt_node not in self.taxonomy:
                return self._invalid(f"unknown ground-truth node {sample.gt_node!r}")
            return self._score(completion, sample)
        except Exception as error:  # a bug must cost one sample's reward, not the training run
            log.exception("reward scoring failed")
            return RewardResult(0.0, dict(self._zeros), ["internal_error"], None, repr(error))

    def score_batch(self, completions: Sequence[str], samples: Sequence[RewardSample]) -> list[RewardResult]:
        if len(completions) != len(samples):
            raise ValueError(f"{len(completions)} completions but {len(samples)} samples")
        return [self.score(c, s) for c, s in zip(completions, samples)]

    def score_records(self, records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """Plain-dict interface (the reward actor's): see `RewardSample.to_record`."""
        results = []
        previous: tuple[Any, RewardSample | str] | None = None
        for record in records:
            try:
                # A GRPO group's completions are adjacent and share their metadata: comparing it
                # (C-level equality) is far cheaper than rebuilding and validating the sample.
                meta = tuple(record.get(k) for k in _META_KEYS)
                if previous is not None and previous[0] == meta:
                    sample = previous[1]
                else:
                    try:
                        sample = RewardSample.from_record(record, self.taxonomy)
                    except ValueError as error:
                        sample = str(error)
                    previous = (meta, sample)
            except AttributeError as error:  # not a dict
                sample = f"malformed reward record: {error!r}"
            if isinstance(sample, str):
                results.append(self._invalid(sample).to_dict())
            else:
                results.append(self.score(record.get("completion", ""), sample).to_dict())
        return results

    # ----------------------------------------------------------------- internals
    def _invalid(self, message: str) -> RewardResult:
        return RewardResult(0.0, dict(self._zeros), ["invalid_sample"], None, message)

    def _score(self, completion: str, sample: RewardSample) -> RewardResult:
        cfg, tax, gt = self.config, self.taxonomy, sample.gt_node
        parsed = parse_completion(completion, self.format)
        fmt_score, fmt_reason = format_reward(parsed, cfg.format_weight)

        if parsed.format_ok or not cfg.require_format_for_content:
            pred, why = resolve_answer(parsed, tax, sample.mode, sample.options, find=self._find)
            stated = parsed.stated_malignancy
        else:
            pred, why, stated = None, "format_required", None

        accuracy = self.components[1]
        if pred is None:
            acc_score, acc_reason = 0.0, why
        elif accuracy == "hierarchical":
            credit, acc_reason = self._credit(pred, gt)
            if not cfg.partial_credit and credit < 1.0:
                credit = 0.0  # binary ablation: a right ancestor alone earns nothing
            acc_score = cfg.hierarchical_weight * credit
        else:
            deepest = self._deepest(sample.option_nodes, gt)
            acc_score, acc_reason = self._granularity(pred, gt, deepest, cfg.granularity_weight)

        if why == "format_required":
            mal_score, mal_reason = 0.0, why
        else:
            mal_score, mal_reason = malignancy_reward(
                tax, gt, stated, pred, cfg.malignancy_weight, cfg.malignancy_source, self._classes(gt),
                cfg.malignancy_classes,
            )

        components = {"format": fmt_score, accuracy: acc_score, "malignancy": mal_score}
        reasons = [f"format:{fmt_reason}", f"{accuracy}:{acc_reason}", f"malignancy:{mal_reason}"]
        if cfg.differential_weight > 0:
            reasoning = parsed.reasoning if why != "format_required" else ""
            ddx_score, ddx_reason = differential_reward(reasoning, self._ddx(gt), cfg.differential_weight)
            components["differential"] = ddx_score
            reasons.append(f"differential:{ddx_reason}")
        total = fmt_score + acc_score + mal_score + components.get("differential", 0.0)
        if not 0.0 <= total <= self.max_reward + 1e-9:  # also catches NaN
            raise AssertionError(f"reward {total} outside [0, {self.max_reward}]")  # caught by score()
        return RewardResult(total, components, reasons, pred)


def score_batch(
    completions: Sequence[str],
    samples: Sequence[RewardSample],
    config: RewardConfig | None = None,
    resolver: LabelResolver | Taxonomy | None = None,
) -> list[RewardResult]:
    """One-shot convenience; reuse a `RewardScorer` in loops to keep its caches warm."""
    return RewardScorer(config, resolver).score_batch(completions, samples)
