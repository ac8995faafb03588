"""LoRA through PEFT, with the paper's preset (r=64, alpha=32, dropout 0.1 on the language model's
q/k/v/o/gate/up/down projections and the vision merger)."""

from __future__ import annotations

from dataclasses import dataclass, field

from skinr1.config.checks import SettingError, at_least, within

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
        at_least("rank", self.rank, 1)
        at_least("alpha", self.alpha, 1)
        within("dropout", self.dropout, 0, 1, high_open=True)
        if not self.language_modules:
            raise SettingError("language_modules", "must name at least one projection")

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


def continue_lora(model, adapter_dir, settings: LoraSettings):
    """Wrap `model` in a trained adapter (SFT's) whose weights train further, instead of a fresh one.

    The adapter keeps its own rank, alpha and target modules: `settings` must agree on rank and
    alpha (a silent mismatch would train another adapter than the config says); its dropout applies,
    as the paper's code uses dropout 0.1 in RL on the adapter that SFT trained without it.
    """
    from peft import LoraConfig, PeftModel

    config = LoraConfig.from_pretrained(str(adapter_dir))
    if (config.r, config.lora_alpha) != (settings.rank, settings.alpha):
        raise ValueError(
            f"the adapter at {adapter_dir} has rank {config.r} and alpha {config.lora_alpha}, the RL "
            f"learner's lora settings say rank {settings.rank} and alpha {settings.alpha}: set them equal "
            "to continue this adapter"
        )
    config.lora_dropout = settings.dropout
    config.inference_mode = False
    return PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=True, config=config)


PEFT_PREFIX = "base_model.model."


def checkpoint_name(peft_name: str) -> str:
    """A PEFT-wrapped parameter's name in the plain checkpoint ("base_model.model.x.base_layer.weight"
    -> "x.weight"), the name vLLM's weight loader expects."""
    return peft_name.removeprefix(PEFT_PREFIX).replace(".base_layer.", ".")


def merged_weights(peft_model):
    """(checkpoint name, tensor) of every base weight with the active adapter merged in, computed
    out of place: the trained model is untouched (an in-place merge/unmerge would drift the base
    weights by float rounding every sync). Adapter tensors themselves are not yielded."""
    return merge_lora_factors(base_weights(peft_model), lora_factors(peft_model))


def base_weights(peft_model):
    """(checkpoint name, tensor) of every weight of the model under the adapter, unmerged, detached."""
    for name, parameter in peft_model.named_parameters():
        if ".lora_" not in name:
            yield checkpoint_name(name), parameter.detach()


def lora_factors(peft_model) -> dict[str, tuple]:
    """{checkpoint name of an adapted weight: (lora_A, lora_B, scaling)} of the active adapter,
    detached: with `base_weights` all that `merged_weights` is made of, so that a rollout actor
    holding the base can merge a synced adapter itself (`rl.lora_sync=merged_on_rollout`).
    Plain LoRA on linear layers only (the adapters this package builds); others are refused."""
    from peft.tuners.lora import Linear, LoraLayer

    factors = {}
    for name, module in peft_model.named_modules():
        if not isinstance(module, LoraLayer) or module.disable_adapters:
            continue
        active = [adapter for adapter in module.active_adapters if adapter in module.lora_A]
        if not active:
            continue
        adapter = active[0]
        unsupported = (len(active) > 1 or not isinstance(module, Linear) or module.fan_in_fan_out
                       or module.use_dora.get(adapter, False) or getattr(module, "lora_bias", {}).get(adapter, False))
        if unsupported:
            raise ValueError(f"{name}: only one plain LoRA adapter on a linear layer can be merged from its "
                             f"factors (active {active}, {type(module).__name__}, DoRA, bias or fan_in_fan_out)")
        factors[checkpoint_name(f"{name}.base_layer.weight")] = (
            module.lora_A[adapter].weight.detach(), module.lora_B[adapter].weight.detach(), float(module.scaling[adapter]))
    return factors


def lora_delta(lora_a, lora_b, scaling: float):
    """B @ A x scaling, as PEFT's `Linear.get_delta_weight` computes it (float32 on the CPU for
    half-precision factors, then back), so that a merge anywhere equals PEFT's own."""
    import torch

    upcast = lora_b.device.type == "cpu" and lora_b.dtype in (torch.float16, torch.bfloat16)
    if upcast:
        return ((lora_b.float() @ lora_a.float()) * scaling).to(lora_b.dtype)
    return (lora_b @ lora_a) * scaling


def merge_lora_factors(base, factors: dict[str, tuple]):
    """(name, tensor) of `base` with each adapted weight's `lora_delta` added, out of place;
    raises if a factor names no base weight (the adapter and the base do not belong together)."""
    missing = set(factors)
    for name, tensor in base:
        if name in factors:
            missing.discard(name)
            lora_a, lora_b, scaling = factors[name]
            tensor = tensor + lora_delta(lora_a.to(tensor.device), lora_b.to(tensor.device), scaling).to(tensor.dtype)
        yield name, tensor
    if missing:
        raise ValueError(f"LoRA factors for {len(missing)} weights the base does not have, e.g. {sorted(missing)[:3]}")
