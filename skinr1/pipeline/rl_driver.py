"""The GRPO driver: the Ray job's entrypoint loop.

prompts from the sparse set -> rollout actors (vLLM) -> reward actors -> learner group (DeepSpeed)
-> weight sync -> metrics and checkpoint. Each role runs on its own placement groups. Every step
is timed (generate, reward, learn, sync, wait) and resumable from its checkpoint with the same data
order. Between steps the rollout pool follows its elastic target (`skinr1.pipeline.scaling`); with
`rl.overlap` the next step's rollouts are generated while the learners train.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rollout.sampling import RolloutRequest, RolloutResult
from skinr1 import run_mirror
from skinr1.pipeline import rl_checkpoint
from skinr1.pipeline.rl_batch import Group, split_constant, step_size, train_samples
from skinr1.pipeline.rl_health import check_scoring, reason_shares, reward_summary, rollout_stats, scoring_error_rate
from skinr1.pipeline.rl_prompts import PromptStream, mapped_records
from skinr1.pipeline.scaling import StopRequested

log = logging.getLogger(__name__)


# Reward scoring is light: half a logical CPU per reward actor.
REWARD_CPUS = 0.5
# Sampling seed of every reward probe: the same images and seed each time, so only the policy varies.
PROBE_SEED = 7919


class SimulatedCrash(RuntimeError):
    """Raised after `rl.stop_after_step`'s checkpoint, to drill the resume path."""


@dataclass
class Prefetch:
    """Generation sent out for a step: its requests, the actors' tickets and the sampling seed."""

    requests: list[RolloutRequest]
    tickets: list
    seed: int
    cursor_before: int
    """The data cursor before these requests were drawn."""


class GRPODriver:
    def __init__(self, runtime, reward_config, start, manifest: str, rl_dir: Path,
                 seed: int = 0, include_system_prompt: bool = True, validation_manifest: str | None = None):
        """`runtime`: the stage's derived settings (`skinr1.config.derive.rl_settings`): the rl section,
        the learner's `PolicySettings` and the rollout engines' `EngineSettings`. `start`: a
        `learner.policy_start.PolicyStart` (skinr1.pipeline.stages.rl_policy_start) or a model path."""
        from learner.policy_start import PolicyStart
        from skinr1.taxonomy import default_taxonomy

        rl = runtime.rl
        self.runtime, self.rl, self.reward_config = runtime, rl, reward_config
        self.start_policy = PolicyStart.of(start)
        self.policy_base = self.start_policy.base
        """The weights the trained adapter (or full model) applies to: the final policy's base."""
        self.rl_dir, self.seed, self.include_system_prompt = Path(rl_dir), seed, include_system_prompt
        if rl.mode != reward_config.mode:
            raise ValueError(f"rl.mode {rl.mode!r} differs from reward.mode {reward_config.mode!r}")
        self.taxonomy = default_taxonomy()
        self.records = mapped_records(manifest, self.taxonomy)
        self.prompts: PromptStream | None = None
        """The stream of RL prompts, built in `start` (it needs the policy's processor)."""
        self.validation = []
        if rl.validate_every:
            if not validation_manifest:
                raise ValueError("rl.validate_every needs a validation manifest (data.valid)")
            self.validation = [r for r in run_mirror.local_records(validation_manifest) if r.node_id in self.taxonomy][: rl.validate_prompts]
            if not self.validation:
                raise ValueError(f"{validation_manifest} has no record with a mapped label")
        self.step, self.version = 0, 0
        self.skipped_steps = 0
        """Steps that trained nothing (every group filtered out); `version` counts the updates."""
        self.curve: list[float] = []
        self.prefetched: Prefetch | None = None
        self.groups: dict[str, Any] = {}  # placement groups of the learners and reward actors
        self.control = None
        self.target = rl.rollout.num_workers

    # ----------------------------------------------------------------- set-up
    def start(self) -> None:
        from learner.group import LearnerGroup
        from learner.weight_sync import make_sync
        from rewards.actor import RewardPool
        from rollout.pool import RolloutPool
        from skinr1 import placement
        from skinr1.pipeline import scaling
        from skinr1.pipeline.prompt_budget import PromptBudget

        rl, runtime = self.rl, self.runtime
        processor = runtime.policy.load_processor(self.policy_base)
        # Actors may run on nodes that cannot see this driver's mirror of a bucket run: they get
        # the starting point's bucket URIs and copy it once per node.
        shipped_start = self.start_policy.map(run_mirror.shipped)
        self.tokenizer = processor.tokenizer
        self.budget = PromptBudget(processor, runtime.policy, runtime.max_model_len)
        self.prompts = PromptStream(self.records, self.budget, rl.mode, self.taxonomy, self.seed, self.include_system_prompt)
        started = time.perf_counter()
        # All-or-nothing per role: a job that cannot place its learners says so instead of hanging.
        learner_gpus = rl.learner.gpus_per_rank if rl.learner.use_gpu else 0
        for role, bundles in (
            ("learners", placement.uniform_bundles(rl.learner.num_ranks, rl.learner.cpus_per_rank, learner_gpus,
                                                   rl.learner.custom_resources)),
            ("rewards", placement.uniform_bundles(rl.num_reward_actors, REWARD_CPUS)),
        ):
            self.groups[role] = placement.reserve(bundles, "PACK", rl.rollout.startup_timeout_s, name=f"skinr1-{role}")
            if self.groups[role] is None:
                raise RuntimeError(f"the cluster has no room for the {role}: {bundles} (see `ray status`)")
        self.rewards = RewardPool(rl.num_reward_actors, self.reward_config, num_cpus_per_actor=REWARD_CPUS,
                                  placement_group=self.groups["rewards"])
        adapters = runtime.engine.enable_lora
        # The learner ranks load the policy and build DeepSpeed while the rollout engines start.
        self.learners = LearnerGroup(shipped_start, rl, self.seed, placement_group=self.groups["learners"],
                                     policy=runtime.policy, wait=False)
        self.pool = RolloutPool(shipped_start.engine_model(adapters), runtime.engine, rl.rollout.num_workers, rl.rollout.resources,
                                placement_timeout_s=rl.rollout.placement_timeout_s,
                                startup_timeout_s=rl.rollout.startup_timeout_s)
        self.learners.wait_ready()
        if self.validation:
            from skinr1.eval.runner import fitting_requests, held_out_requests

            questions, requests = held_out_requests(self.tokenizer, self.validation, rl.mode, self.taxonomy,
                                                    self.include_system_prompt, self.seed)
            self.validation = fitting_requests(self.budget, self.validation, questions, requests)[0]
        self.sync = make_sync(rl.sync_backend, self.learners, self.pool, adapters, run_key=str(self.rl_dir.resolve()),
                              bucket_bytes=int(rl.sync_bucket_mb * 1024 * 1024), merge_on_rollout=rl.merges_on_rollout)
        if self.start_policy.adapter is not None and adapters:
            self.sync.push(self.version)  # engines on the bare base serve the continued adapter from the start
        self.job_id = scaling.current_job_id()
        self.control = scaling.start_control(self.job_id, rl.rollout.min_workers, rl.rollout.max_workers)
        self.startup_s = time.perf_counter() - started
        log.info("GRPO job %s: resize its rollout pool with `skinr1 scale --job %s --rollout-workers N`, "
                 "end it after a step with `skinr1 stop --job %s`", self.job_id, self.job_id, self.job_id)
        self._resume()

    def _resume(self) -> None:
        checkpoint = rl_checkpoint.latest_checkpoint(self.rl_dir)
        if checkpoint is None:
            return
        state = rl_checkpoint.read_state(checkpoint)
        source = rl_checkpoint.learner_source(checkpoint)  # a bucket run: its committed checkpoint's URI
        self.learners.load(source)
        print(f"[rl] resuming from {source} (step {state['step']})")
        self.step, self.prompts.cursor, self.version = state["step"], state["cursor"], state["version"]
        self.curve = state.get("reward_curve", [])
        self.skipped_steps = state.get("skipped_steps", 0)
        rl_checkpoint.restore_rng_state(state["rng"])
        self.sync.push(self.version)  # rollout actors serve the checkpoint's policy
        log.info("resumed from %s at step %d (cursor %d)", checkpoint, self.step, self.prompts.cursor)

    # ----------------------------------------------------------------- one step
    def _probe(self) -> dict[str, Any]:
        """Score G fresh samples of the fixed probe images (same seed every time; nothing is trained)."""
        started = time.perf_counter()
        requests = self.prompts.probe_requests(self.rl.probe_prompts)
        results = self.pool.generate(requests, self.rl.sampling, seed=PROBE_SEED)
        _, scored = self._score(results, requests)
        summary = reward_summary(scored)
        return {**{f"probe_{k}": v for k, v in summary.items()}, "probe_policy_version": self.version,
                "probe_s": time.perf_counter() - started}

    def _validate(self) -> dict[str, Any]:
        """Greedy answers to the validation images under the current policy, scored as evaluation does."""
        from rollout.sampling import SamplingSettings
        from skinr1.eval.metrics import dataset_metrics
        from skinr1.eval.runner import held_out_requests, score_answers

        started = time.perf_counter()
        questions, requests = held_out_requests(self.tokenizer, self.validation, self.rl.mode, self.taxonomy,
                                                self.include_system_prompt, self.seed)
        greedy = SamplingSettings(group_size=1, temperature=0.0, max_tokens=self.rl.sampling.max_tokens)
        requests = [replace(r, image=run_mirror.shipped_image(r.image)) for r in requests]
        results = self.pool.generate(requests, greedy, seed=self.seed)
        texts = [result.samples[0].text for result in results]
        m = dataset_metrics(self.taxonomy, score_answers(self.validation, questions, texts, self.rl.mode, self.taxonomy, "valid"))
        return {"val_leaf_accuracy": m["leaf_accuracy"], "val_leaf_ci": m["ci"]["leaf_accuracy"],
                **{f"val_accuracy_L{level}": acc for level, acc in m["accuracy_by_level"].items()},
                "val_parse_failure_rate": m["parse_failure_rate"], "val_skin_type_gap": m["skin_type_gap"],
                "val_n": m["n"], "val_policy_version": self.version, "val_s": time.perf_counter() - started}

    def _before_update(self, every: int) -> bool:
        """Whether a periodic check runs before this step's update (the last step's row instead
        gets the final policy's check, after the update)."""
        return bool(every) and self.step % every == 0 and self.step + 1 < self.rl.steps

    def _score(self, results: list[RolloutResult], requests: list[RolloutRequest]) -> tuple[list[Group], list[dict]]:
        from rewards.scoring import RewardSample
        from skinr1.prompts.choice import ChoiceOption

        by_id = {r.prompt_id: r for r in requests}
        records = []
        for result in results:
            options = tuple(ChoiceOption.from_dict(o) for o in result.metadata["options"])
            sample = RewardSample(result.metadata["label"], self.rl.mode, options)
            records.extend(sample.to_record(completion.text) for completion in result.samples)
        scored = self.rewards.score(records)
        groups, start = [], 0
        for result in results:
            n = len(result.samples)
            rewards = [s["reward"] for s in scored[start : start + n]]
            request = by_id[result.prompt_id]
            groups.append(Group(result.prompt_id, request.prompt, request.image,
                                [s.token_ids for s in result.samples], [s.logprobs for s in result.samples],
                                rewards, result.policy_version))
            start += n
        return groups, scored

    def _rescale(self) -> None:
        """Between steps: move the pool toward its elastic target (a scale request, else max)."""
        import ray

        from skinr1.pipeline.scaling import pool_target

        rollout = self.rl.rollout
        requested = ray.get(self.control.requested_workers.remote())
        target = pool_target(requested, rollout.min_workers, rollout.max_workers)
        if target != self.pool.size:
            self.pool.resize(target)
        self.target = target
        self.control.report.remote({"size": self.pool.size, "target": target, "step": self.step})

    def _stop_requested(self) -> bool:
        """Whether `skinr1 stop` asked this job to end after the step just done."""
        import ray

        return self.control is not None and ray.get(self.control.stop_requested.remote())

    def _start_generation(self, count: int) -> Prefetch:
        cursor_before = self.prompts.cursor
        requests = self.prompts.next_requests(count)
        seed = self.seed * 100003 + self.prompts.cursor
        return Prefetch(requests, self.pool.submit(requests, self.rl.sampling, seed), seed, cursor_before)

    def run_step(self) -> dict[str, Any]:
        rl = self.rl
        # A probe before the update (the policy this step samples from); the last step's row gets
        # the final policy's probe instead.
        probe = self._probe() if self._before_update(rl.probe_every) else {}
        if self._before_update(rl.validate_every):
            probe.update(self._validate())
        timings = {"generate_s": 0.0, "reward_s": 0.0, "learn_s": 0.0, "sync_s": 0.0, "wait_s": 0.0}
        step_started = time.perf_counter()
        kept: list[Group] = []
        dropped = refills = 0
        all_scored: list[dict] = []
        all_results: list[RolloutResult] = []
        wanted = rl.prompts_per_step
        for round_index in range(rl.loss.max_refill_rounds + 1):
            if round_index == 0 and self.prefetched is not None:
                work, self.prefetched = self.prefetched, None
            else:
                if round_index == 0:
                    self._rescale()
                work = self._start_generation(wanted - len(kept))
                if rl.kill_rollout_actor_at_step == self.step + 1 and round_index == 0 and self.pool.size > 1:
                    self.pool.kill_actor(work.tickets[0].actor_name)
            tick = time.perf_counter()
            results = self.pool.collect(work.tickets, rl.sampling, seed=work.seed)
            timings["generate_s"] += time.perf_counter() - tick
            tick = time.perf_counter()
            groups, scored = self._score(results, work.requests)
            timings["reward_s"] += time.perf_counter() - tick
            check_scoring(scored, rl.max_reward_error_rate)
            all_scored += scored
            all_results += results
            informative, constant = split_constant(groups, rl.sampling.group_size)
            if not rl.loss.filter_constant_groups:
                informative, constant = groups, []
            kept += informative
            dropped += len(constant)
            if len(kept) >= wanted:
                break
            refills += 1
        timings["wait_s"] = timings["generate_s"]  # the learners idle while they wait for rollouts
        if rl.overlap and self.step + 1 < rl.steps:
            self._rescale()
            self.prefetched = self._start_generation(wanted)  # runs on the rollout actors during learn
        metrics: dict[str, Any] = {"kept_groups": len(kept), "dropped_groups": dropped, "refill_rounds": min(refills, rl.loss.max_refill_rounds)}
        if kept:
            samples = train_samples(kept, rl.sampling.group_size, wanted, rl.loss.advantage_scaling, rl.loss.std_floor,
                                    rl.loss.std_unbiased, rl.loss.std_epsilon)
            tick = time.perf_counter()
            metrics.update(self.learners.train_step(samples, step_size(samples, rl.loss.aggregation)))
            timings["learn_s"] = time.perf_counter() - tick
            self.version += 1
            if self.prefetched is not None:
                # A weight update queues behind the actors' generation; time that wait on its own.
                tick = time.perf_counter()
                self.pool.wait_idle(self.prefetched.tickets)
                timings["wait_s"] += time.perf_counter() - tick
            tick = time.perf_counter()
            sync = self.sync.push(self.version)
            timings["sync_s"] = time.perf_counter() - tick
            # Export (merge, gather, write) against push (transfer and engine reload): where a slow sync goes.
            metrics.update(sync_bytes=sync["bytes"], sync_export_s=sync["export_s"], sync_push_s=sync["push_s"])
        else:
            # Every group had equal rewards even after refilling: nothing to learn from, no update.
            self.skipped_steps += 1
            log.warning("step %d: all %d groups had equal rewards; no update (%d such steps so far)",
                        self.step + 1, dropped, self.skipped_steps)
        metrics.update(trained=bool(kept), skipped_steps=self.skipped_steps, skipped_prompts=len(self.budget.skipped))
        self.step += 1
        timings["step_s"] = time.perf_counter() - step_started
        metrics.update(timings)
        metrics.update(reward_summary(all_scored))
        metrics.update(rollout_stats(all_results))
        metrics.update(reward_reasons=reason_shares(all_scored), reward_error_rate=scoring_error_rate(all_scored))
        events, self.pool.events = self.pool.events, []
        metrics.update({"policy_version": self.version, "cursor": self.data_cursor, "pool_size": self.pool.size,
                        "pool_target": self.target, "prompts": [g.prompt_id for g in kept], "pool_events": events,
                        "rollout_versions": sorted({g.policy_version for g in kept})})
        if self.step == rl.steps:  # the final policy
            probe = self._probe() if rl.probe_every else {}
            if rl.validate_every:
                probe.update(self._validate())
        metrics.update(probe)
        self.curve.append(metrics["reward_mean"])
        return metrics

    @property
    def data_cursor(self) -> int:
        """Where a resumed run continues: prompts already sent out for the next step are not
        consumed yet (they are regenerated after a restart)."""
        return self.prefetched.cursor_before if self.prefetched is not None else self.prompts.cursor

    # ----------------------------------------------------------------- loop
    def run(self, logger=None, progress: bool = True) -> dict[str, Any]:
        from tqdm import tqdm

        from skinr1.progress import progress_enabled

        bar = tqdm(total=self.rl.steps, initial=self.step, desc="grpo", unit="step", disable=not (progress and progress_enabled()))
        last: dict[str, Any] = {}
        while self.step < self.rl.steps:
            last = self.run_step()
            if logger is not None:
                logger.log(self.step, last)
            bar.update(1)
            bar.set_postfix(reward=f"{last['reward_mean']:.3f}")
            stop = self._stop_requested()
            if self.step % self.rl.checkpoint_every == 0 or self.step == self.rl.steps or stop:
                self.save_checkpoint()
                if self.rl.stop_after_step is not None and self.step >= self.rl.stop_after_step and self.step < self.rl.steps:
                    raise SimulatedCrash(f"stopped after step {self.step} as configured")
            if stop and self.step < self.rl.steps:
                bar.close()
                raise StopRequested(self.step, self.rl.steps)
        bar.close()
        return last

    def save_checkpoint(self) -> None:
        state = {"step": self.step, "cursor": self.data_cursor, "version": self.version, "seed": self.seed,
                 "rng": rl_checkpoint.rng_state(), "reward_curve": self.curve, "policy_base": self.policy_base,
                 "skipped_steps": self.skipped_steps, "model_settings": self.runtime.policy.to_dict()}
        if rl_checkpoint.bucket_root(self.rl_dir) is not None:
            # A bucket run: each rank uploads its part from its own node; no node needs another's disk.
            rl_checkpoint.commit_parts(self.rl_dir, self.step, state, self.rl.keep_checkpoints, self.learners.save)
            return
        staging = rl_checkpoint.staging_directory(self.rl_dir, self.step)
        self.learners.save(str(staging))
        rl_checkpoint.commit_checkpoint(staging, self.rl_dir, self.step, state, self.rl.keep_checkpoints)

    def shutdown(self) -> None:
        from skinr1.placement import release

        # The sync first: its shared-memory files are freed through the learners.
        for part, stop in (("sync", "close"), ("pool", "shutdown"), ("learners", "shutdown"), ("rewards", "shutdown")):
            component = getattr(self, part, None)
            if component is not None:
                try:
                    getattr(component, stop)()
                except Exception as error:  # keep shutting the rest down
                    log.warning("shutting down %s: %s", part, error)
        for group in self.groups.values():
            release(group)
        self.groups = {}
