"""GRPO as pure tensor functions: group advantages, clipped policy loss, KL estimators, aggregation.

Everything here is stateless and unit-tested; the learner actors only call these functions.
Shapes: `rewards` is [num_groups * group_size] (samples of one prompt are contiguous); token tensors
are [batch, tokens] with a 0/1 `mask` marking completion tokens.
"""

from __future__ import annotations

from typing import Sequence

import torch

KL_ESTIMATORS = ("k1", "k2", "k3")
ADVANTAGE_SCALINGS = ("std", "none")
AGGREGATIONS = ("token_mean", "sequence_mean")
KL_CLAMP = 10.0
"""Bound on a token's KL estimate. k3 grows as p_ref / p: one token the policy has made e^15 times
less likely than the reference would add a 3e6 loss and dominate the whole update (verl and
OpenRLHF clamp at the same bound)."""


def group_advantages(
    rewards: torch.Tensor,
    group_size: int,
    scaling: str = "std",
    std_floor: float = 1e-2,
    equal_tolerance: float = 1e-6,
    unbiased_std: bool = False,
    std_epsilon: float = 0.0,
) -> torch.Tensor:
    """Reward minus its group's mean, divided by the group's std (GRPO) or not at all (Dr.GRPO).

    The divisor is max(std, `std_floor`) + `std_epsilon`, with the population std or, with
    `unbiased_std`, the sample std (the paper's code: (r - mean) / (unbiased std + 1e-4)). A group
    whose rewards are all equal (within `equal_tolerance`) gets exactly zero advantage: float
    rounding would otherwise leave ~1e-8 residues that a near-zero std inflates a thousandfold. The
    floor guards nearly-constant groups for the same reason.
    """
    if scaling not in ADVANTAGE_SCALINGS:
        raise ValueError(f"scaling must be one of {ADVANTAGE_SCALINGS}, got {scaling!r}")
    if group_size < 1 or rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    grouped = rewards.to(torch.float64).view(-1, group_size)
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    if scaling == "std":
        std = grouped.std(dim=1, unbiased=unbiased_std, keepdim=True) if group_size > 1 else torch.zeros_like(grouped[:, :1])
        centred = centred / (std.clamp_min(std_floor) + std_epsilon)
    constant = (grouped.max(dim=1, keepdim=True).values - grouped.min(dim=1, keepdim=True).values) <= equal_tolerance
    centred = torch.where(constant, torch.zeros_like(centred), centred)
    return centred.view(-1).to(rewards.dtype if rewards.is_floating_point() else torch.float32)


def constant_groups(rewards: torch.Tensor, group_size: int, tolerance: float = 1e-6) -> torch.Tensor:
    """Boolean [num_groups]: True where every sample of the group has the same reward."""
    grouped = rewards.view(-1, group_size)
    return (grouped.max(dim=1).values - grouped.min(dim=1).values) <= tolerance


def kl_divergence(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str = "k3") -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) from sampled tokens' log-probs.

    k1 = log r (unbiased, can be negative), k2 = (log r)^2 / 2, k3 = r' - 1 - log r' with
    r' = p_ref / p (unbiased and non-negative; Schulman's estimator, used by the paper). Every
    estimate is clamped to [-KL_CLAMP, KL_CLAMP]: a clamped token adds no gradient.
    """
    log_ratio = logprobs - ref_logprobs
    if estimator == "k1":
        kl = log_ratio
    elif estimator == "k2":
        kl = 0.5 * log_ratio.square()
    elif estimator == "k3":
        # Clamp before exp too: a single very unlikely token must not produce inf (or inf - inf).
        neg = (-log_ratio).clamp(-20.0, 20.0)
        kl = torch.exp(neg) - 1.0 - neg
    else:
        raise ValueError(f"estimator must be one of {KL_ESTIMATORS}, got {estimator!r}")
    return kl.clamp(-KL_CLAMP, KL_CLAMP)


def clipped_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token PPO-style clipped surrogate (to minimise) and a 0/1 tensor of clipped tokens.

    `advantages` is per sequence ([batch]) or per token. clip_high > clip_low is DAPO's
    "clip-higher", which leaves more room to raise the probability of rare good tokens.
    """
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(1)
    ratio = torch.exp((logprobs - old_logprobs).clamp(-20.0, 20.0))
    unclipped = ratio * advantages
    clipped = ratio.clamp(1.0 - clip_low, 1.0 + clip_high) * advantages
    loss = -torch.minimum(unclipped, clipped)
    return loss, (clipped < unclipped).to(logprobs.dtype)


def importance_weights(old_logprobs: torch.Tensor, rollout_logprobs: torch.Tensor, cap: float) -> torch.Tensor:
    """Truncated importance weights p_learner / p_rollout (capped) for the numerical gap between the
    engine that sampled (vLLM) and the learner. cap <= 0 disables the correction (all ones)."""
    if cap <= 0:
        return torch.ones_like(old_logprobs)
    return torch.exp((old_logprobs - rollout_logprobs).clamp(-20.0, 20.0)).clamp(max=cap).detach()


def token_sum(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum()


def grpo_token_losses(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor | None,
    rollout_logprobs: torch.Tensor | None,
    advantages: torch.Tensor,
    clip_low: float,
    clip_high: float,
    kl_beta: float,
    kl_estimator: str,
    tis_cap: float,
) -> dict[str, torch.Tensor]:
    """Per-token total loss and its parts (all [batch, tokens]); aggregate with `token_mean_over_step`."""
    policy, clipped = clipped_policy_loss(logprobs, old_logprobs, advantages, clip_low, clip_high)
    if rollout_logprobs is not None:
        policy = policy * importance_weights(old_logprobs, rollout_logprobs, tis_cap)
    parts = {"policy": policy, "clipped": clipped}
    total = policy
    if kl_beta > 0 and ref_logprobs is not None:
        kl = kl_divergence(logprobs, ref_logprobs, kl_estimator)
        parts["kl"] = kl
        total = total + kl_beta * kl
    parts["total"] = total
    return parts


def token_mean_over_step(token_losses: torch.Tensor, mask: torch.Tensor, step_token_count: int | float) -> torch.Tensor:
    """Sum of this micro-batch's masked token losses over the token count of the WHOLE step.

    Summing these over all micro-batches (and ranks) gives the mean over every completion token of
    the step, so long and short completions weigh per token, not per sequence, whatever the split.
    """
    if step_token_count <= 0:
        raise ValueError("the step has no completion tokens")
    return token_sum(token_losses, mask) / step_token_count


def step_denominator(completion_lengths: Sequence[int], weights: Sequence[float], aggregation: str) -> float:
    """What a step's loss is averaged over, across all its micro-batches and ranks: the weighted
    completion tokens ("token_mean", DAPO's aggregation: long answers weigh by their length) or the
    weighted sequences ("sequence_mean": each answer's token mean counts once, the paper's code).
    Padding samples have weight 0 and count for nothing."""
    if aggregation == "token_mean":
        return float(sum(n * w for n, w in zip(completion_lengths, weights)))
    if aggregation == "sequence_mean":
        return float(sum(w for n, w in zip(completion_lengths, weights) if n > 0))
    raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")


def mean_over_step(token_losses: torch.Tensor, mask: torch.Tensor, denominator: float, aggregation: str) -> torch.Tensor:
    """This micro-batch's share of the step's loss (see `step_denominator`); summing the shares of
    every micro-batch and rank gives the step's token or sequence mean, however it is split."""
    if aggregation == "token_mean":
        return token_mean_over_step(token_losses, mask, denominator)
    if aggregation != "sequence_mean":
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
    if denominator <= 0:
        raise ValueError("the step has no completions")
    # The mask holds each sample's weight on its completion tokens: weight x the row's token mean.
    tokens = (mask > 0).sum(dim=1).clamp_min(1)
    return ((token_losses * mask).sum(dim=1) / tokens).sum() / denominator


def sequence_logprobs_from_logits(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Log-probs of `targets` under `logits` ([batch, tokens, vocab] -> [batch, tokens]).

    Computed in float32; dividing by the sampling temperature makes the learner's log-probs
    comparable with the sampler's.
    """
    return target_logprobs(logits, targets, temperature)


def target_logprobs(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0,
                    real: torch.Tensor | None = None) -> torch.Tensor:
    """Log-probs of `targets` at the sampling temperature ([batch, tokens, vocab] -> [batch, tokens]),
    computed at the positions where `real` (0/1, [batch, tokens]) is nonzero only and 0 elsewhere;
    every position when `real` is None. No entropy: what a no-grad scoring pass (the KL
    reference, old log-probs) needs. gather minus logsumexp equals log_softmax then gather, without
    writing a vocabulary-wide tensor of log-probs; skipping padding matters most in scoring passes,
    whose rows are padded to the longest completion of many micro-batches."""
    def chosen_logprobs(chosen_logits: torch.Tensor, chosen_targets: torch.Tensor) -> torch.Tensor:
        scaled = chosen_logits.float() / temperature
        return scaled.gather(-1, chosen_targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(scaled, dim=-1)

    if real is None:
        return chosen_logprobs(logits, targets)
    keep = real.bool()
    values = chosen_logprobs(logits[keep], targets[keep])  # [real tokens]
    return torch.zeros(targets.shape, dtype=values.dtype, device=values.device).index_put((keep,), values)


def logprobs_and_entropy(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs of `targets` and the (detached) entropy of each position's distribution at the
    sampling temperature, from one log_softmax ([batch, tokens, vocab] -> two [batch, tokens])."""
    log_probs = torch.log_softmax(logits.float() / temperature, dim=-1)
    chosen = torch.gather(log_probs, 2, targets.unsqueeze(-1)).squeeze(-1)
    with torch.no_grad():
        entropy = -(log_probs.exp() * log_probs).sum(dim=-1)
    return chosen, entropy

