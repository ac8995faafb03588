"""Pure parts of the GRPO driver: prompt stream, group filtering, padding, bucketing, checkpoints."""

from __future__ import annotations

import json

import pytest
import torch

from learner.weight_sync import bucket_named_tensors, weight_group
from rollout.pool import split_evenly
from skinr1.pipeline import rl_checkpoint
from skinr1.pipeline.rl_batch import Group, split_constant, step_size, stream_indices, train_samples


def group(name, rewards, length=3):
    return Group(name, f"prompt {name}", f"{name}.png", [[7] * length for _ in rewards], [[-0.5] * length for _ in rewards], rewards, 0)


def test_stream_is_deterministic_and_covers_each_epoch():
    first = stream_indices(10, seed=1, cursor=0, count=10)
    assert sorted(first) == list(range(10))
    assert stream_indices(10, 1, 0, 25) == first + stream_indices(10, 1, 10, 15)
    assert stream_indices(10, 1, 4, 3) == first[4:7]  # resume from a cursor: same data
    with pytest.raises(ValueError):
        stream_indices(0, 1, 0, 1)


def test_constant_groups_are_split_off():
    kept, dropped = split_constant([group("a", [1.0, 0.0]), group("b", [2.0, 2.0]), group("c", [0.0, 0.5])], 2)
    assert [g.prompt_id for g in kept] == ["a", "c"] and [g.prompt_id for g in dropped] == ["b"]


def test_train_samples_carry_advantages_and_pad_with_zero_weight():
    samples = train_samples([group("a", [2.0, 0.0], length=4)], group_size=2, target_groups=3, scaling="std", std_floor=0.01)
    assert len(samples) == 6
    assert [s.advantage for s in samples[:2]] == pytest.approx([1.0, -1.0])
    assert all(s.weight == 0.0 and s.advantage == 0.0 for s in samples[2:])
    assert step_size(samples, "token_mean") == 8  # padding contributes no tokens
    assert step_size(samples, "sequence_mean") == 2  # ... and no sequences
    with pytest.raises(ValueError):
        train_samples([], 2, 1, "std", 0.01)


def test_split_evenly_balances_prompts():
    chunks = split_evenly(list(range(7)), 3)
    assert [len(c) for c in chunks] == [3, 2, 2] and sum(chunks, []) == list(range(7))
    assert split_evenly([1], 4) == [[1]]


def test_buckets_keep_order_and_size():
    named = [(f"w{i}", torch.zeros(256)) for i in range(10)]  # 1 KiB each
    buckets = bucket_named_tensors(named, bucket_bytes=3 * 1024)
    assert [len(b) for b in buckets] == [3, 3, 3, 1]
    assert [n for b in buckets for n, _ in b] == [n for n, _ in named]
    big = bucket_named_tensors([("big", torch.zeros(4096)), ("small", torch.zeros(1))], bucket_bytes=1024)
    assert [[n for n, _ in b] for b in big] == [["big"], ["small"]]
    with pytest.raises(ValueError):
        bucket_named_tensors(named, 0)


def test_weight_groups_follow_numbered_blocks():
    assert weight_group("model.language_model.layers.12.self_attn.q_proj.weight") == "model.language_model.layers.12"
    assert weight_group("model.visual.blocks.0.mlp.up_proj.bias") == "model.visual.blocks.0"
    assert weight_group("model.language_model.norm.weight") == "model.language_model.norm"
    assert weight_group("lm_head.weight") == "lm_head"
    assert weight_group("scale") == "scale"


def test_buckets_never_split_a_block_whose_tensors_vllm_fuses():
    # q/k/v (and gate/up) of one layer become one fused tensor in vLLM: they must arrive in one
    # reload call, even when the block is larger than a bucket or interleaved with other names.
    def block(layer):
        return [(f"model.layers.{layer}.self_attn.{p}.weight", torch.zeros(256)) for p in ("q_proj", "k_proj", "v_proj")]

    named = [("model.embed_tokens.weight", torch.zeros(256)), *block(0), *block(1)[:2], ("lm_head.weight", torch.zeros(256)), block(1)[2]]
    buckets = bucket_named_tensors(named, bucket_bytes=2 * 1024)
    groups = [{weight_group(n) for n, _ in b} for b in buckets]
    assert groups == [{"model.embed_tokens"}, {"model.layers.0"}, {"model.layers.1"}, {"lm_head"}]
    assert sorted(n for b in buckets for n, _ in b) == sorted(n for n, _ in named)
    assert [n for n, _ in buckets[2]] == [n for n, _ in block(1)]


def test_checkpoints_are_atomic_and_pruned(tmp_path):
    for step in (1, 2, 3):
        staging = rl_checkpoint.staging_directory(tmp_path, step)
        (staging / "policy").mkdir()
        rl_checkpoint.commit_checkpoint(staging, tmp_path, step, {"step": step}, keep=2)
    names = [p.name for p in rl_checkpoint.list_checkpoints(tmp_path)]
    assert names == ["step-000002", "step-000003"]
    # A staging directory left by a crash is never taken for a checkpoint.
    rl_checkpoint.staging_directory(tmp_path, 4)
    assert rl_checkpoint.latest_checkpoint(tmp_path).name == "step-000003"
    assert json.loads((tmp_path / "checkpoints" / "step-000003" / "driver_state.json").read_text())["step"] == 3


def test_rng_state_round_trips():
    import random

    state = rl_checkpoint.rng_state()
    expected = (random.random(), torch.rand(1).item())
    rl_checkpoint.restore_rng_state(json.loads(json.dumps(state)))
    assert (random.random(), torch.rand(1).item()) == expected


def test_each_prompt_gets_its_own_sampling_seed():
    from rollout.sampling import request_seed

    seeds = {request_seed(7, f"{cursor}:synthetic:{cursor}") for cursor in range(1000)}
    assert len(seeds) == 1000  # no two prompts of a step share a random stream
    assert request_seed(7, "3:a") == request_seed(7, "3:a")  # a retried prompt samples the same
    assert request_seed(7, "3:a") != request_seed(8, "3:a")
    assert all(0 <= s < 2**31 for s in seeds)
    assert request_seed(None, "3:a") is None


def test_completion_text_decodes_as_the_engine_would(tiny_model_dir):
    """Texts decoded once per completion (rollout actors sample with detokenize=False): special
    tokens skipped, a character whose bytes the length limit cut off left out, a whole one kept."""
    from rollout.sampling import completion_text
    from skinr1.models.loading import load_processor

    tokenizer = load_processor(str(tiny_model_dir)).tokenizer
    words = tokenizer("a naevus")["input_ids"]
    first_byte, second_byte = tokenizer.convert_tokens_to_ids(["Ã", "©"])  # the two bytes of "é"
    assert completion_text(tokenizer, words + [tokenizer.eos_token_id]) == "a naevus"
    assert completion_text(tokenizer, words + [first_byte]) == "a naevus"
    assert completion_text(tokenizer, words + [first_byte, second_byte]) == "a naevusé"
    assert completion_text(tokenizer, [first_byte, second_byte] + words) == "éa naevus"


def _result(finish_reasons, lengths):
    from rollout.sampling import RolloutResult, Sample

    samples = [Sample("", [1] * n, [0.0] * n, reason) for reason, n in zip(finish_reasons, lengths)]
    return RolloutResult("p", [], samples, 0)


def test_rollout_stats_count_truncated_completions_and_lengths():
    from skinr1.pipeline.rl_health import rollout_stats

    stats = rollout_stats([_result(["stop", "length"], [10, 160]), _result(["stop", "stop"], [20, 30])])
    assert stats == {"completion_len_mean": 55.0, "completion_len_max": 160, "truncation_rate": 0.25}
    assert rollout_stats([]) == {}


def test_scoring_errors_are_counted_and_stop_the_run_above_the_limit():
    from skinr1.pipeline.rl_health import RewardHealthError, check_scoring, reason_shares, scoring_error_rate

    ok = {"reward": 1.0, "reasons": ["format:ok", "hierarchical:exact", "malignancy:ok"]}
    wrong = {"reward": 0.0, "reasons": ["format:ok", "hierarchical:wrong_category", "malignancy:wrong"]}
    crashed = {"reward": 0.0, "reasons": ["internal_error"], "error": "KeyError('x')"}
    scored = [ok, ok, wrong, crashed]
    assert reason_shares(scored)["internal_error"] == 0.25 and reason_shares(scored)["format:ok"] == 0.75
    assert scoring_error_rate(scored) == 0.25 and scoring_error_rate([ok, wrong]) == 0.0
    assert check_scoring([ok, wrong], 0.0) == 0.0
    assert check_scoring(scored, 0.25) == 0.25
    with pytest.raises(RewardHealthError, match=r"25\.0% .* KeyError"):
        check_scoring(scored, 0.1)


def test_grpo_refuses_truncated_sampling_and_bad_error_limits():
    from learner.grpo_config import GRPOConfig
    from rollout.sampling import SamplingSettings

    with pytest.raises(ValueError, match="top_p"):
        GRPOConfig(sampling=SamplingSettings(top_p=0.9))
    with pytest.raises(ValueError, match="max_reward_error_rate"):
        GRPOConfig(max_reward_error_rate=1.5)


def test_paper_advantages_divide_by_the_unbiased_std_plus_epsilon():
    samples = train_samples([group("a", [2.0, 0.0, 1.0, 1.0])], group_size=4, target_groups=1, scaling="std",
                            std_floor=1e-12, unbiased_std=True, std_epsilon=1e-4)
    unbiased = (2 / 3) ** 0.5  # sample std of 2, 0, 1, 1
    assert [s.advantage for s in samples] == pytest.approx([1 / (unbiased + 1e-4), -1 / (unbiased + 1e-4), 0.0, 0.0])


def test_reward_summary_averages_rewards_and_terms():
    from skinr1.pipeline.rl_health import reward_summary

    scored = [{"reward": 2.0, "components": {"format": 1.0, "hierarchical": 0.75}},
              {"reward": 1.0, "components": {"format": 1.0, "hierarchical": 0.0}}]
    assert reward_summary(scored) == {"reward_mean": 1.5, "reward_std": 0.5, "samples": 2,
                                      "reward_format": 1.0, "reward_hierarchical": 0.375}
    assert reward_summary([])["reward_mean"] == 0.0
