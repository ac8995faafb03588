"""GPU check, level 1: the learner alone, in-process (no Ray, no vLLM).

`python -m skinr1.gpu_check [--device cuda|cpu] [--dtype bfloat16|float32|float16] [--out DIR]`

Two SFT steps (`learner.sft_worker.SFTWorker`) and two GRPO steps (`learner.rank.LearnerRank`) of
the real learner code on one device with the tiny model: DeepSpeed, PEFT LoRA, the real batch
building (processor, images, masks) and the real losses. It checks that the weights and every batch
sit on the requested device, that the weights have the requested dtype, that every loss is finite,
that a rewarded completion's log-prob rises while a penalised one's falls, and that the learner's
shared-prompt forward gives the full-row forward's log-probs within the dtype's tolerance (the
level-2 bound); it prints step times and peak GPU memory. It needs only torch, transformers, peft
and deepspeed, so it runs on a bare CUDA image (`SKINR1_ALLOW_UNTESTED_VERSIONS=1` admits untested
versions of those). The CPU run (`--device cpu`) is the same code path and runs in the test suite
(tests/gpu/), so it cannot rot.
Level 2 (the whole loop with Ray and CUDA vLLM) is scripts/gpu_check.sh.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from skinr1.gpu_check_level2 import logprob_tolerance

PROMPT = "What is the diagnosis?"
GOOD = "<thinking>dark irregular lesion</thinking><final diagnosis>melanoma (malignant)</final diagnosis>"
BAD = "<thinking>scaly plaque</thinking><final diagnosis>psoriasis (non-neoplastic)</final diagnosis>"


class CheckFailed(AssertionError):
    """A level-1 expectation did not hold."""


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def _write_inputs(root: Path) -> tuple[str, str]:
    """An image and a 4-record SFT set (chat messages, as the trajectory writer produces)."""
    from PIL import Image

    image = root / "lesion.jpg"
    Image.new("RGB", (600, 450), (90, 50, 40)).save(image)
    user = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROMPT}]}
    rows = [{"id": f"r{i}", "image": str(image), "messages": [user, {"role": "assistant", "content": GOOD}]}
            for i in range(4)]
    data = root / "sft.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(image), str(data)


class _Inputs:
    """Records the device of every batch the model is called with (a forward pre-hook)."""

    def __init__(self, module):
        self.devices: set[str] = set()
        self.handle = module.register_forward_pre_hook(self._record, with_kwargs=True)

    def _record(self, _module, args, kwargs):
        for value in (*args, *kwargs.values()):
            if hasattr(value, "device"):
                self.devices.add(value.device.type)

    def close(self) -> None:
        self.handle.remove()


def _check_module(module, device: str, dtype: str, what: str) -> None:
    import torch

    devices = {p.device.type for p in module.parameters()}
    dtypes = {p.dtype for p in module.parameters()}
    _expect(devices == {device}, f"{what}: weights on {devices}, expected {device}")
    _expect(dtypes == {getattr(torch, dtype)}, f"{what}: weights in {dtypes}, expected {dtype}")


def _peak_memory_mb(device: str) -> float | None:
    import torch

    if device != "cuda":
        return None
    return torch.cuda.max_memory_allocated() / 2**20


def run_sft_steps(model: str, data: str, policy, device: str, steps: int = 2) -> dict[str, Any]:
    from learner.lora import LoraSettings
    from learner.sft_config import SFTConfig
    from learner.sft_worker import SFTWorker

    config = SFTConfig(num_workers=1, use_gpu=device == "cuda", micro_batch_size=2, grad_accum_steps=1, max_steps=steps,
                       learning_rate=1e-3, warmup_ratio=0.0, max_length=512, lora=LoraSettings(rank=8, alpha=16, dropout=0.1))
    worker = SFTWorker(config, model, data, rank=0, world=1, policy=policy)
    inputs = _Inputs(worker.engine.module)
    try:
        _check_module(worker.engine.module, device, policy.dtype, "SFT model")
        rows = [worker.train_step(step) for step in range(steps)]
    finally:
        inputs.close()
        worker.close()
    _expect(inputs.devices == {device}, f"SFT batches on {inputs.devices}, expected {device}")
    losses = [row["loss"] for row in rows]
    _expect(all(math.isfinite(v) for v in losses), f"SFT losses not finite: {losses}")
    return {"sft_losses": losses, "sft_step_s": [row["step_time_s"] for row in rows]}


def run_grpo_steps(model: str, image: str, policy, device: str, steps: int = 2) -> dict[str, Any]:
    from learner.grpo_config import GRPOConfig, LearnerConfig, LossConfig
    from learner.group import free_port
    from learner.lora import LoraSettings
    from learner.policy_batch import TrainSample
    from learner.rank import LearnerRank
    from rollout.sampling import SamplingSettings

    config = GRPOConfig(
        steps=10, prompts_per_step=1, mode="open", sampling=SamplingSettings(group_size=2, temperature=1.0, max_tokens=64),
        loss=LossConfig(kl_beta=0.04, kl_estimator="k3"),
        learner=LearnerConfig(num_ranks=1, micro_batch_size=2, learning_rate=1e-2, use_gpu=device == "cuda",
                              lora=LoraSettings(rank=8, alpha=16, dropout=0.0)),
    )
    rank = LearnerRank(0, 1, model, config, seed=0, policy=policy)
    rank.setup(("127.0.0.1", free_port()))
    try:
        _check_module(rank.engine.module, device, policy.dtype, "GRPO model")
        tokenizer = rank.processor.tokenizer
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROMPT}]}],
            add_generation_prompt=True, tokenize=False)
        good, bad = tokenizer.encode(GOOD), tokenizer.encode(BAD)
        probe = [TrainSample(prompt, image, ids, [0.0] * len(ids), 0.0) for ids in (good, bad)]
        before = [sum(row) for row in rank.policy_logprobs(probe)]
        # Rollout log-probs as the engine would report them: the learner's own, so the gap is 0.
        rollout = rank.policy_logprobs(probe)
        samples = [TrainSample(prompt, image, good, rollout[0], 1.0), TrainSample(prompt, image, bad, rollout[1], -1.0)]
        inputs = _Inputs(rank.engine.module)
        try:
            reports = [rank.train_step(samples, step_size=len(good) + len(bad)) for _ in range(steps)]
        finally:
            inputs.close()
        after = [sum(row) for row in rank.policy_logprobs(probe)]
        _expect(inputs.devices == {device}, f"GRPO batches on {inputs.devices}, expected {device}")
        batch = rank.encode(samples)
        _expect({t.device.type for t in (batch["mask"], batch["advantages"], batch["rollout_logprobs"])} == {device},
                "GRPO loss tensors are not on the engine's device")
        shared_gap = shared_prompt_gap(rank.engine.module, batch)
        image_tokens = int(batch["prompts"]["mm_token_type_ids"][0].sum())
    finally:
        rank.shutdown()
    for report in reports:
        _expect(all(math.isfinite(report[k]) for k in ("loss", "policy", "kl", "entropy")), f"GRPO loss not finite: {report}")
    tolerance = logprob_tolerance(policy.dtype)
    _expect(shared_gap["mean"] < tolerance, f"shared-prompt log-probs differ from the full-row forward's by "
            f"{shared_gap['mean']:.2e} per token on average (max {shared_gap['max']:.2e}); {policy.dtype} allows {tolerance}")
    _expect(after[0] > before[0], f"the rewarded completion's log-prob did not rise: {before[0]:.3f} -> {after[0]:.3f}")
    _expect(after[1] < before[1], f"the penalised completion's log-prob did not fall: {before[1]:.3f} -> {after[1]:.3f}")
    return {"grpo_losses": [r["loss"] for r in reports], "grpo_kl": [r["kl"] for r in reports],
            "grpo_step_s": [r["seconds"] for r in reports], "rewarded_logprob": [before[0], after[0]],
            "penalised_logprob": [before[1], after[1]], "shared_prompt_gap": shared_gap,
            "image_tokens": image_tokens}


def shared_prompt_gap(model, batch: dict[str, Any]) -> dict[str, float]:
    """Mean and largest |log-prob| gap per completion token between the learner's forward (each
    prompt and image once, its keys and values copied to the rows continuing it) and the plain
    full-row forward, on the batch's device and dtype: the two differ only by rounding."""
    import torch

    from learner.grpo import logprobs_and_entropy
    from learner.policy_batch import full_sequence_logits, token_logprobs

    model.eval()
    with torch.no_grad():
        shared = token_logprobs(model, batch, 1.0)
        full = logprobs_and_entropy(full_sequence_logits(model, batch), batch["targets"], 1.0)[0]
    gaps = (shared - full).abs()[batch["mask"].bool()].float()
    return {"mean": gaps.mean().item(), "max": gaps.max().item()}


def run_level1(device: str = "cuda", dtype: str = "bfloat16", out_dir: str | Path | None = None,
               max_pixels: int = 200704) -> dict[str, Any]:
    """Run level 1 and return its report; raises `CheckFailed` (or the learner's own error).
    `max_pixels`: the paper's 448x448 by default (a 600x450 photograph -> 252 image tokens); the CPU
    test lowers it to keep the suite fast on two cores (the code path is the same)."""
    import torch

    from learner.group import free_port
    from learner.rank import init_process_group
    from skinr1.models.settings import PolicySettings
    from skinr1.models.tiny import TinyModelSpec, build_tiny_model
    from skinr1.versions import check_versions

    check_versions(learner_only=True)
    # Only what the learner path itself imports counts (a test session may have imported Ray
    # already; tests/gpu/test_gpu_check_units.py checks a fresh interpreter).
    preloaded = {m for m in ("ray", "vllm") if m in sys.modules}
    if device == "cuda":
        _expect(torch.cuda.is_available(), "--device cuda but CUDA is not available")
        torch.cuda.set_device(0)
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="skinr1-gpu-check-") as scratch:
        root = Path(out_dir) if out_dir else Path(scratch)
        root.mkdir(parents=True, exist_ok=True)
        # Qwen2.5-VL's real processor bounds, capped like the paper: a 600x450 image is 252 tokens.
        model = str(build_tiny_model(root / "model", TinyModelSpec.with_real_pixels()))
        image, data = _write_inputs(root)
        policy = PolicySettings(dtype=dtype, max_pixels=max_pixels)
        # One process group for both parts (Ray Train / the learner group make it in a real run).
        init_process_group(0, 1, "127.0.0.1", free_port(), use_gpu=device == "cuda")
        report: dict[str, Any] = {"device": device, "dtype": dtype, "torch": torch.__version__, "max_pixels": max_pixels}
        try:
            report.update(run_sft_steps(model, data, policy, device))
            report.update(run_grpo_steps(model, image, policy, device))
        finally:  # the GRPO rank's shutdown ends the group; after a failure, so does this
            if torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()
    report["ray_or_vllm_imported"] = sorted(m for m in ("ray", "vllm") if m in sys.modules and m not in preloaded)
    _expect(not report["ray_or_vllm_imported"], f"the learner path imported {report['ray_or_vllm_imported']}")
    report["peak_gpu_memory_mb"] = _peak_memory_mb(device)
    report["total_s"] = time.perf_counter() - started
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--dtype", choices=("bfloat16", "float32", "float16"), default="bfloat16")
    parser.add_argument("--max-pixels", type=int, default=200704, help="image area bound (default 448x448)")
    parser.add_argument("--out", help="keep the model and inputs here (default: a temporary directory)")
    args = parser.parse_args(argv)
    report = run_level1(args.device, args.dtype, args.out, args.max_pixels)
    print(f"level 1 on {report['device']} ({report['dtype']}, torch {report['torch']}): PASS")
    print(f"  SFT  losses {report['sft_losses']}  step times {[f'{s:.2f}s' for s in report['sft_step_s']]}")
    print(f"  GRPO losses {report['grpo_losses']}  step times {[f'{s:.2f}s' for s in report['grpo_step_s']]}")
    print(f"  image tokens per prompt: {report['image_tokens']} (max_pixels {report['max_pixels']})")
    gap = report["shared_prompt_gap"]
    print(f"  shared-prompt vs full-row forward: mean gap {gap['mean']:.2e}, max {gap['max']:.2e} nats per token")
    print(f"  rewarded log-prob {report['rewarded_logprob'][0]:.3f} -> {report['rewarded_logprob'][1]:.3f}, "
          f"penalised {report['penalised_logprob'][0]:.3f} -> {report['penalised_logprob'][1]:.3f}")
    peak = report["peak_gpu_memory_mb"]
    print(f"  peak GPU memory: {f'{peak:.0f} MiB' if peak is not None else 'n/a (CPU)'}; total {report['total_s']:.1f}s")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
