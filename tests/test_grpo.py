"""GRPO loss and advantage functions on hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from learner.grpo import (
    mean_over_step,
    step_denominator,
    KL_CLAMP,
    KL_ESTIMATORS,
    clipped_policy_loss,
    constant_groups,
    group_advantages,
    grpo_token_losses,
    importance_weights,
    kl_divergence,
    logprobs_and_entropy,
    sequence_logprobs_from_logits,
    target_logprobs,
    token_mean_over_step,
)


def test_group_advantages_normalise_within_groups():
    rewards = torch.tensor([2.0, 0.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5])
    adv = group_advantages(rewards, group_size=4)
    first = torch.tensor([2.0, 0.0, 1.0, 1.0])
    expected = (first - 1.0) / first.std(unbiased=False)
    assert torch.allclose(adv[:4], expected)
    assert torch.equal(adv[4:], torch.zeros(4))  # constant group: exactly zero


def test_constant_group_with_rounding_noise_is_not_inflated():
    base = 0.1 + 0.2  # 0.30000000000000004
    rewards = torch.tensor([base, 0.3, 0.3, base], dtype=torch.float64)
    assert torch.equal(group_advantages(rewards, 4), torch.zeros(4, dtype=torch.float64))
    nearly = torch.tensor([1.0, 1.0, 1.0, 1.0 + 1e-4])
    assert group_advantages(nearly, 4).abs().max() < 0.1  # std floor: no 1000x blow-up


def test_dr_grpo_keeps_raw_centred_rewards():
    rewards = torch.tensor([2.0, 0.0, 1.0, 1.0])
    assert torch.allclose(group_advantages(rewards, 4, scaling="none"), torch.tensor([1.0, -1.0, 0.0, 0.0]))


def test_group_advantages_reject_bad_shapes():
    with pytest.raises(ValueError, match="groups of 3"):
        group_advantages(torch.zeros(4), 3)
    with pytest.raises(ValueError, match="scaling"):
        group_advantages(torch.zeros(4), 2, scaling="rank")


def test_group_size_one_gives_zero_advantage():
    assert torch.equal(group_advantages(torch.tensor([1.0, 2.0]), 1), torch.zeros(2))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 2, allow_nan=False), min_size=8, max_size=8))
def test_advantages_are_finite_and_zero_mean(values):
    adv = group_advantages(torch.tensor(values, dtype=torch.float64), 4)
    assert torch.isfinite(adv).all()
    assert adv.view(2, 4).sum(dim=1).abs().max() < 1e-6
    assert adv.abs().max() <= 2 / 1e-2 + 1e-6


def test_constant_groups_mask():
    assert constant_groups(torch.tensor([1.0, 1.0, 0.0, 1.0]), 2).tolist() == [True, False]


def test_kl_estimators():
    logp = torch.tensor([[math.log(0.5), math.log(0.2)]])
    ref = torch.tensor([[math.log(0.25), math.log(0.2)]])
    k1 = kl_divergence(logp, ref, "k1")
    assert torch.allclose(k1, torch.tensor([[math.log(2.0), 0.0]]))
    assert torch.allclose(kl_divergence(logp, ref, "k2"), 0.5 * k1.square())
    k3 = kl_divergence(logp, ref, "k3")
    assert torch.allclose(k3, torch.tensor([[0.5 - 1 + math.log(2.0), 0.0]]))
    assert (kl_divergence(torch.randn(50), torch.randn(50), "k3") >= 0).all()
    assert torch.isfinite(kl_divergence(torch.tensor([0.0]), torch.tensor([-1e4]), "k3")).all()
    with pytest.raises(ValueError):
        kl_divergence(logp, ref, "k4")


def test_kl_is_bounded_so_one_token_cannot_dominate_the_update():
    # The policy made one token e^15 times less likely than the reference: unclamped k3 is ~3.3e6.
    logp = torch.tensor([[-15.0, math.log(0.5)]], requires_grad=True)
    ref = torch.tensor([[0.0, math.log(0.5)]])
    for estimator in KL_ESTIMATORS:
        kl = kl_divergence(logp, ref, estimator)
        assert kl.abs().max() <= KL_CLAMP, (estimator, kl)
    k3 = kl_divergence(logp, ref, "k3")
    assert k3[0, 0] == KL_CLAMP and k3[0, 1] == 0.0
    k3.sum().backward()
    assert logp.grad[0, 0] == 0.0  # a clamped token adds no gradient


def test_clipping_low_and_high():
    old = torch.zeros(1, 3)
    new = torch.log(torch.tensor([[1.5, 0.5, 1.1]]))
    positive = torch.tensor([1.0])
    loss, clipped = clipped_policy_loss(new, old, positive, clip_low=0.2, clip_high=0.28)
    assert torch.allclose(loss, -torch.tensor([[1.28, 0.5, 1.1]]))  # ratio 1.5 clipped at 1 + 0.28
    assert clipped.tolist() == [[1.0, 0.0, 0.0]]
    negative = torch.tensor([-1.0])
    loss, clipped = clipped_policy_loss(new, old, negative, clip_low=0.2, clip_high=0.28)
    assert torch.allclose(loss, torch.tensor([[1.5, 0.8, 1.1]]))  # ratio 0.5 clipped at 1 - 0.2
    assert clipped.tolist() == [[0.0, 1.0, 0.0]]


def test_on_policy_gradient_is_advantage_weighted_logprob_gradient():
    logp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    loss, _ = clipped_policy_loss(logp, logp.detach(), torch.tensor([0.5]))
    loss.sum().backward()
    assert torch.allclose(logp.grad, torch.tensor([[-0.5, -0.5]]))


def test_importance_weights_are_capped_and_detached():
    old = torch.tensor([0.0, 0.0, 0.0], requires_grad=True)
    rollout = torch.log(torch.tensor([0.5, 2.0, 0.1]))
    weights = importance_weights(old, rollout, cap=3.0)
    assert torch.allclose(weights, torch.tensor([2.0, 0.5, 3.0]))
    assert not weights.requires_grad
    assert torch.equal(importance_weights(old, rollout, cap=0), torch.ones(3))


def test_token_mean_over_step_weighs_tokens_not_sequences():
    losses = torch.tensor([[1.0, 1.0, 1.0, 0.0], [4.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    # Split into two micro-batches: the sum over micro-batches equals the mean over all 4 tokens.
    total = token_mean_over_step(losses[:1], mask[:1], 4) + token_mean_over_step(losses[1:], mask[1:], 4)
    assert total.item() == pytest.approx(7.0 / 4)
    with pytest.raises(ValueError):
        token_mean_over_step(losses, mask, 0)


def test_padding_tokens_do_not_count():
    losses = torch.tensor([[1.0, 1e6]])
    mask = torch.tensor([[1.0, 0.0]])
    assert token_mean_over_step(losses, mask, 1).item() == 1.0


def test_grpo_token_losses_combine_parts():
    logp = torch.log(torch.tensor([[0.5, 0.5]]))
    parts = grpo_token_losses(logp, logp, logp - 0.1, logp, torch.tensor([1.0]), 0.2, 0.2, 0.5, "k1", 2.0)
    assert torch.allclose(parts["policy"], torch.tensor([[-1.0, -1.0]]))
    assert torch.allclose(parts["kl"], torch.tensor([[0.1, 0.1]]))
    assert torch.allclose(parts["total"], parts["policy"] + 0.5 * parts["kl"])
    no_kl = grpo_token_losses(logp, logp, None, None, torch.tensor([1.0]), 0.2, 0.2, 0.0, "k3", 0.0)
    assert "kl" not in no_kl


def test_logprobs_from_logits_with_temperature():
    logits = torch.tensor([[[2.0, 0.0], [0.0, 0.0]]])
    targets = torch.tensor([[0, 1]])
    out = sequence_logprobs_from_logits(logits, targets, temperature=2.0)
    assert torch.allclose(out[0, 0], torch.log_softmax(torch.tensor([1.0, 0.0]), 0)[0])
    assert torch.allclose(out[0, 1], torch.tensor(math.log(0.5)))


def test_target_logprobs_equal_the_training_log_probs_on_real_tokens_and_are_zero_elsewhere():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 11, generator=generator) * 4
    targets = torch.randint(0, 11, (3, 5), generator=generator)
    real = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [0, 0, 0, 0, 0]])
    expected, _ = logprobs_and_entropy(logits, targets, 0.7)
    everywhere = target_logprobs(logits, targets, 0.7)
    assert torch.allclose(everywhere, expected, atol=1e-6)
    masked = target_logprobs(logits, targets, 0.7, real)
    assert torch.allclose(masked[real.bool()], expected[real.bool()], atol=1e-6)
    assert torch.equal(masked[~real.bool()], torch.zeros(int((real == 0).sum())))


def test_target_logprobs_carry_the_gradient_of_real_tokens_only():
    logits = torch.randn(2, 3, 7, requires_grad=True)
    targets = torch.randint(0, 7, (2, 3))
    real = torch.tensor([[1, 1, 0], [1, 0, 0]])
    target_logprobs(logits, targets, 1.0, real).sum().backward()
    assert torch.equal(logits.grad[~real.bool()], torch.zeros(3, 7))
    assert bool((logits.grad[real.bool()].abs().sum(dim=-1) > 0).all())


def test_sequence_mean_weighs_each_answer_once_and_token_mean_each_token():
    # Two answers: 1 token of loss 4 and 3 tokens of loss 1; a padding row of weight 0.
    losses = torch.tensor([[4.0, 0.0, 0.0], [1.0, 1.0, 1.0], [9.0, 9.0, 9.0]])
    mask = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    lengths, weights = [1, 3, 3], [1.0, 1.0, 0.0]
    tokens = step_denominator(lengths, weights, "token_mean")
    sequences = step_denominator(lengths, weights, "sequence_mean")
    assert (tokens, sequences) == (4.0, 2.0)
    assert float(mean_over_step(losses, mask, tokens, "token_mean")) == pytest.approx(7 / 4)
    assert float(mean_over_step(losses, mask, sequences, "sequence_mean")) == pytest.approx((4 + 1) / 2)
    # Split over two micro-batches, the shares add up to the same step mean.
    halves = [mean_over_step(losses[i : i + 2], mask[i : i + 2], sequences, "sequence_mean") for i in (0, 2)]
    assert float(sum(halves)) == pytest.approx(2.5)
    with pytest.raises(ValueError, match="aggregation"):
        step_denominator(lengths, weights, "mean")
