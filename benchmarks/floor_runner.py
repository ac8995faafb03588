"""The raw-engine floor of a `bench_vs_trl` workload: what one step costs with no framework around it.

    python benchmarks/floor_runner.py WORKLOAD.json OUT.json [--profile PROFILE.txt]

In one process: a SkinR1 rollout worker (the actors' class, without Ray around it) generates the
step's completions, then a plain PyTorch LoRA policy runs the learner's work on exactly those
samples: the reference (KL) pass, one forward/backward per micro-batch and one AdamW update. No
Ray, no DeepSpeed, no weight sync, no reward actor (the reward is scored in-process and counted
apart). `--profile` runs cProfile over the learner part of the measured steps and writes the top
functions (where SkinR1's learner spends its time, outside Ray's actors).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def build_requests(workload, tokenizer, step: int):
    from rollout.sampling import RolloutRequest
    from skinr1.prompts.questions import make_question

    records = workload.records[step * workload.prompts : (step + 1) * workload.prompts]
    requests = []
    for index, record in enumerate(records):
        question = make_question(tokenizer, record["record_id"], record["image"], record["node_id"], "open",
                                 include_system_prompt=False, seed=workload.seed)
        requests.append(RolloutRequest(f"{step}:{index}", question.prompt, record["image"], {"label": record["node_id"]}))
    return requests


def generate(worker, requests, workload, seed: int):
    """The step's completions from an in-process rollout worker: the actors' own generation code."""
    from rollout.sampling import SamplingSettings

    sampling = SamplingSettings(group_size=workload.group_size, temperature=workload.temperature, max_tokens=workload.max_tokens)
    return [result.samples for result in worker.generate(requests, sampling, seed)]


def train_samples_of(requests, completions, workload, scorer):
    """Score with SkinR1's reward and build the learner's advantage-weighted samples."""
    import torch

    from learner.grpo import group_advantages
    from learner.policy_batch import TrainSample
    from rewards.scoring import RewardSample

    rewards, flat = [], []
    for request, samples in zip(requests, completions):
        sample = RewardSample(request.metadata["label"], "open")
        for completion in samples:
            rewards.append(scorer.score(completion.text, sample).reward)
            flat.append((request, completion))
    advantages = group_advantages(torch.tensor(rewards, dtype=torch.float64), workload.group_size, "std", 1e-2).tolist()
    return [TrainSample(r.prompt, r.image, c.token_ids, c.logprobs, a) for (r, c), a in zip(flat, advantages)]


class Learner:
    """SkinR1's per-rank learner work on one process, in plain PyTorch (the workload's dtype, LoRA, AdamW)."""

    def __init__(self, workload):
        import torch

        from learner.lora import LoraSettings, apply_lora
        from skinr1.models.settings import PolicySettings

        torch.manual_seed(workload.seed)
        self.workload, self.settings = workload, PolicySettings(dtype=workload.dtype)
        self.processor = self.settings.load_processor(workload.model)
        self.model = apply_lora(self.settings.load_policy(workload.model),
                                LoraSettings(rank=workload.lora_rank, alpha=workload.lora_alpha, dropout=0.0))
        self.model.to(self.settings.torch_dtype)  # adapters too, as DeepSpeed's bf16 mode casts the whole module
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(trainable, lr=workload.learning_rate, weight_decay=0.0)

    def step(self, samples) -> dict[str, float]:
        import torch

        from learner.grpo import grpo_token_losses, mean_over_step, step_denominator
        from learner.micro_batches import encode_micro_batches, score_in_passes
        from learner.policy_batch import token_logprobs, token_logprobs_and_entropy

        w = self.workload
        started = time.perf_counter()
        # As a learner rank builds them: sorted by length, each (prompt, image) processed once.
        step = encode_micro_batches(self.processor, samples, self.settings, w.micro_batch, 1, by_length=True)
        batches = step.encoded
        encoded = time.perf_counter()
        with torch.no_grad():
            self.model.eval()
            with self.model.disable_adapter():
                reference = (score_in_passes(lambda b: token_logprobs(self.model, b, w.temperature), step, self.processor,
                                             self.settings, w.score_micro_batch // w.micro_batch)
                             if w.kl_beta > 0 else [None] * len(batches))
            for batch, ref_logprobs in zip(batches, reference):
                batch["ref_logprobs"] = ref_logprobs
        scored = time.perf_counter()
        self.model.train()
        size = max(1.0, step_denominator([len(s.completion_ids) for s in samples], [s.weight for s in samples], "token_mean"))
        for batch in batches:
            logprobs, _ = token_logprobs_and_entropy(self.model, batch, w.temperature)
            parts = grpo_token_losses(logprobs, logprobs.detach(), batch["ref_logprobs"], batch["rollout_logprobs"],
                                      batch["advantages"], w.clip_low, w.clip_high, w.kl_beta, "k3", w.tis_cap)
            mean_over_step(parts["total"], batch["mask"], size, "token_mean").backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        done = time.perf_counter()
        return {"encode_s": encoded - started, "scoring_s": scored - encoded, "train_s": done - scored}


def run(workload_path: str, out_path: str, profile_path: str | None = None) -> dict:
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from bench_workload import Workload, skinr1_runtime
    from rewards.config import RewardConfig
    from rewards.scoring import RewardScorer
    from rollout.actor import RolloutWorker
    from rollout.engine import EngineSettings, engine_core_in_process

    workload = Workload.load(workload_path)
    # The engine core where SkinR1's rollout actors run theirs by default (this process serves one
    # engine), compiled or eager as SkinR1's engines are.
    engine = EngineSettings(max_model_len=workload.max_model_len, dtype=workload.dtype, seed=workload.seed,
                            engine_core_in_process=engine_core_in_process("auto"),
                            enforce_eager=skinr1_runtime(workload).engine.enforce_eager)
    worker = RolloutWorker("floor", workload.model, engine)
    learner = Learner(workload)
    tokenizer = learner.processor.tokenizer
    scorer = RewardScorer(RewardConfig(mode="open"))
    profiler = cProfile.Profile() if profile_path else None
    rows = []
    for step in range(workload.total_steps):
        requests = build_requests(workload, tokenizer, step)
        started = time.perf_counter()
        completions = generate(worker, requests, workload, seed=workload.seed * 100003 + step)
        generated = time.perf_counter()
        samples = train_samples_of(requests, completions, workload, scorer)
        rewarded = time.perf_counter()
        measured = profiler is not None and step >= workload.warmup
        if measured:
            profiler.enable()
        parts = learner.step(samples)
        if measured:
            profiler.disable()
        rows.append({"step_s": time.perf_counter() - started, "generate_s": generated - started,
                     "reward_s": rewarded - generated, "scoring_s": parts["scoring_s"],
                     "train_s": parts["train_s"] + parts["encode_s"], "encode_s": parts["encode_s"], "sync_s": 0.0,
                     "samples": len(samples), "trained_samples": len(samples),
                     "tokens": sum(len(s.completion_ids) for s in samples)})
    worker.shutdown()
    result = {"system": "floor", "status": "ok", "steps": rows}
    if profiler is not None:
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(40)
        Path(profile_path).write_text(text.getvalue())
    Path(out_path).write_text(json.dumps(result))
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workload")
    parser.add_argument("out")
    parser.add_argument("--profile", default=None, help="write cProfile's top functions of the learner part here")
    args = parser.parse_args()
    run(args.workload, args.out, args.profile)
