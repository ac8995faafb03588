"""Where the GRPO policy starts, and what its KL term compares against."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Optional, Union


@dataclass(frozen=True)
class PolicyStart:
    """The weights of a GRPO run's start (skinr1.pipeline.stages.rl_policy_start decides them).

    The usual start trains a fresh LoRA adapter (or all weights) on `base`; the KL reference is then
    the start itself ("adapters disabled", or a frozen copy). Continuing SFT's adapter instead trains
    that adapter on the bare base model, so the reference must be the merged SFT weights.
    """

    base: str
    """Weights the learner loads; the RL adapter, and so the final policy, applies to them."""
    adapter: Optional[str] = None
    """A trained LoRA adapter that GRPO continues (SFT's); None: a fresh adapter or full weights."""
    reference: Optional[str] = None
    """Frozen weights of the KL reference, equal to the starting policy; None: the start itself."""

    def __post_init__(self) -> None:
        if self.adapter is not None and self.reference is None:
            raise ValueError("continuing an adapter needs its merged weights as the KL reference")

    @classmethod
    def of(cls, start: Union["PolicyStart", str]) -> "PolicyStart":
        """A start as given, or a bare model path (a fresh adapter on it)."""
        return start if isinstance(start, PolicyStart) else cls(base=str(start))

    def map(self, convert: Callable[[str], str]) -> "PolicyStart":
        """The same start with every location converted: to the bucket URIs actors on other nodes
        read (skinr1.run_mirror.shipped), or from them to this node's copies (storage.cached_model)."""
        return replace(self, base=convert(self.base),
                       adapter=None if self.adapter is None else convert(self.adapter),
                       reference=None if self.reference is None else convert(self.reference))

    def engine_model(self, serves_adapters: bool) -> str:
        """What the rollout engines load: weights that generate as the starting policy does. Engines
        that serve adapters apply the (synced) adapter on the bare base; engines that take full
        weights start from the merged start."""
        if self.adapter is None or serves_adapters:
            return self.base
        return self.reference
