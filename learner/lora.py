"""LoRA through PEFT, with the paper's preset (r=64, alpha=32, dropout 0.1 on the language model's
q/k/v/o/gate/up/down projections and the vision merger)."""

from __future__ import annotations

from dataclasses import dataclass, field

LANGUAGE_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class LoraSettings:
    """Low-rank adaptation of the policy (disable for full fine-tuning)."""

    enabled: bool = True
    """Train a LoRA adapter; false trains all weights."""
    rank: int = 64
    """Adapter rank r (paper: 64)."""
    alpha: int = 32
    """Scaling numerator: updates are scaled by alpha / r (paper: 32)."""
    dropout: float = 0.1
    """Dropout on the adapter input (paper: 0.1)."""
    language_modules: list[str] = field(default_factory=lambda: list(LANGUAGE_PROJECTIONS))
    """Projection names adapted inside the language model (the vision tower's blocks use the same
    names, so matching is restricted to the language model)."""
    vision_merger: bool = True
    """Also adapt the vision merger (the MLP that maps patches into the language model)."""

    def __post_init__(self) -> None:
        if self.rank < 1 or self.alpha < 1:
            raise ValueError(f"lora.rank and lora.alpha must be >= 1, got {self.rank}, {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"lora.dropout must be in [0, 1), got {self.dropout}")
        if not self.language_modules:
            raise ValueError("lora.language_modules must name at least one projection")

    def target_regex(self) -> str:
        """A full-name regex for PEFT: language-model projections, plus the merger's two linears."""
        names = "|".join(sorted(set(self.language_modules)))
        pattern = rf".*language_model.*\.({names})"
        if self.vision_merger:
            pattern += r"|.*visual\.merger\.mlp\.(0|2)"
        return pattern


def apply_lora(model, settings: LoraSettings):
    """Wrap `model` in a PEFT LoRA model (only adapter weights trainable)."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=settings.target_regex(),
        bias="none",
    )
    return get_peft_model(model, config)
