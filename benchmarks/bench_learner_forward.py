"""The learner's forward and backward of one micro-batch, two ways, on one device:

- shared: what the learner runs (`learner.policy_batch.token_logprobs_and_entropy`): each distinct
  prompt and its image once, its keys and values copied to the G completions continuing it;
- full rows: one row per completion holding its prompt, its own copy of the image and its
  completion (`full_sequence_logits`: a plain forward, what sharing saves against).

    python benchmarks/bench_learner_forward.py [--device cuda] [--dtype bfloat16] [--size 3b]
        [--prompts 2] [--group-size 8] [--completion 160] [--image 600x450] [--repeats 5]

It prints, per way: median milliseconds of forward + backward, peak accelerator memory, and the
mean and largest log-prob difference between the two ways. Sizes: `tiny` (the demo's shapes) and `3b`
(Qwen2.5-VL-3B's layer shapes: 36 text layers of width 2048, a 32-block vision tower of width
1280), randomly initialised from a config (no model hub), with the tiny model's trained tokenizer:
its small vocabulary makes the output layer cheaper than the real model's 151,936 entries (the
full-row way computes logits for every position, the shared way for completion tokens only, so a
real vocabulary would widen the gap).
LoRA as in the demo (r=64 on the language model's projections and the vision merger).
Images of real photograph size, under Qwen2.5-VL's pixel bounds capped at `--max-pixels` (default
448x448, the paper's); the script prints the image-token count.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SIZES = {
    "tiny": {},
    # Qwen2.5-VL-3B-Instruct's config.json shapes (vocabulary aside, see the module docstring).
    "3b": {"text": {"hidden_size": 2048, "intermediate_size": 11008, "num_hidden_layers": 36, "num_attention_heads": 16,
                    "num_key_value_heads": 2, "max_window_layers": 36,
                    "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]}},
           "vision": {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16, "out_hidden_size": 2048,
                      "fullatt_block_indexes": [7, 15, 23, 31]}},
}


def build_policy(size: str, device: str, dtype: str, scratch: Path):
    """(LoRA-wrapped model on `device` in `dtype`, processor with Qwen2.5-VL's pixel bounds)."""
    import torch
    from transformers import AutoConfig, Qwen2_5_VLForConditionalGeneration

    from learner.lora import LoraSettings, apply_lora
    from skinr1.models.loading import load_processor
    from skinr1.models.tiny import TinyModelSpec, build_tiny_model

    tiny = build_tiny_model(scratch / "tiny", TinyModelSpec.with_real_pixels())
    config = AutoConfig.from_pretrained(tiny)
    for key, value in SIZES[size].get("text", {}).items():
        setattr(config.text_config, key, value)
    for key, value in SIZES[size].get("vision", {}).items():
        setattr(config.vision_config, key, value)
    # One attention type per layer, as the config derives it for its own layer count.
    config.text_config.layer_types = [config.text_config.layer_types[0]] * config.text_config.num_hidden_layers
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=getattr(torch, dtype))
    model = apply_lora(model, LoraSettings(rank=64, alpha=128, dropout=0.0))
    with torch.no_grad():  # a trained adapter's B is not zero: make the adapter part of the work
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0.0, 0.01)
    return model.train(), load_processor(tiny)


def make_batch(processor, prompts: int, group_size: int, completion: int, image_size: tuple[int, int], max_pixels: int,
               dtype: str, device: str, scratch: Path):
    """A micro-batch of `prompts` groups of `group_size` completions of `completion` tokens each."""
    import numpy as np
    import torch
    from PIL import Image

    from learner.devices import to_device
    from learner.policy_batch import TrainSample, encode_batch
    from skinr1.models.settings import PolicySettings

    generator = np.random.default_rng(0)
    tokens = torch.Generator().manual_seed(0)
    samples = []
    for index in range(prompts):
        path = scratch / f"image-{index}.jpg"
        Image.fromarray(generator.integers(0, 255, (image_size[1], image_size[0], 3), dtype=np.uint8)).save(path)
        prompt = processor.tokenizer.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": f"Case {index}: what is the diagnosis?"}]}],
            add_generation_prompt=True, tokenize=False)
        for member in range(group_size):
            ids = torch.randint(10, 1500, (completion,), generator=tokens).tolist()
            samples.append(TrainSample(prompt, str(path), ids, [0.0] * completion, 1.0 if member % 2 else -1.0))
    batch = encode_batch(processor, samples, PolicySettings(dtype=dtype, max_pixels=max_pixels))
    return to_device(batch, device)


def timed(step, device: str, warmup: int, repeats: int) -> tuple[list[float], float | None]:
    """Milliseconds of each repeat of `step()` after `warmup` untimed ones, and the peak memory (MiB)."""
    import torch

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    for _ in range(warmup):
        step()
    sync()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        sync()
        times.append((time.perf_counter() - started) * 1000)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None
    return times, peak


def run(args) -> dict:
    import torch

    from learner.grpo import logprobs_and_entropy
    from learner.policy_batch import full_sequence_logits, token_logprobs_and_entropy
    from skinr1.gpu_check import shared_prompt_gap

    width, height = (int(v) for v in args.image.split("x"))
    with tempfile.TemporaryDirectory(prefix="skinr1-bench-forward-") as scratch:
        model, processor = build_policy(args.size, args.device, args.dtype, Path(scratch))
        batch = make_batch(processor, args.prompts, args.group_size, args.completion, (width, height), args.max_pixels,
                           args.dtype, args.device, Path(scratch))
    mask = batch["mask"]

    def shared():
        return token_logprobs_and_entropy(model, batch, 1.0)[0]

    def full_rows():
        return logprobs_and_entropy(full_sequence_logits(model, batch), batch["targets"], 1.0)[0]

    def train(way):
        def step():
            model.zero_grad(set_to_none=True)
            ((way() * mask).sum() / mask.sum()).backward()
        return step

    gap = shared_prompt_gap(model, batch)
    model.train()
    report = {"device": args.device, "dtype": args.dtype, "size": args.size, "torch": torch.__version__,
              "gpu": torch.cuda.get_device_name(0) if args.device == "cuda" else None,
              "parameters_m": sum(p.numel() for p in model.parameters()) / 1e6,
              "prompt_tokens": int(batch["prompts"]["attention_mask"].sum(dim=1).max()),
              "image_tokens": int(batch["prompts"]["mm_token_type_ids"].sum(dim=1).max()),
              "rows": int(mask.shape[0]), "completion_tokens": int(mask.shape[1]), "logprob_gap": gap}
    for name, way in (("shared", shared), ("full_rows", full_rows)):
        times, peak = timed(train(way), args.device, args.warmup, args.repeats)
        report[name] = {"median_ms": statistics.median(times), "times_ms": times, "peak_mib": peak}
    report["speedup"] = report["full_rows"]["median_ms"] / report["shared"]["median_ms"]
    return report


def print_report(report: dict) -> None:
    where = report["gpu"] or "CPU"
    print(f"learner forward + backward, one micro-batch: {report['size']} ({report['parameters_m']:.0f}M parameters), "
          f"{report['dtype']}, {where}, torch {report['torch']}")
    print(f"  {report['rows']} completions of {report['completion_tokens']} tokens; prompts of {report['prompt_tokens']} tokens "
          f"({report['image_tokens']} image tokens)")
    print("| way | median ms | peak MiB |")
    print("|---|---|---|")
    for name in ("shared", "full_rows"):
        peak = report[name]["peak_mib"]
        print(f"| {name} | {report[name]['median_ms']:.1f} | {f'{peak:.0f}' if peak is not None else 'n/a'} |")
    gap = report["logprob_gap"]
    print(f"shared is {report['speedup']:.2f}x faster; log-prob difference per completion token: mean {gap['mean']:.2e}, "
          f"largest {gap['max']:.2e}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    parser.add_argument("--size", default="3b", choices=sorted(SIZES))
    parser.add_argument("--prompts", type=int, default=2, help="distinct prompts (groups) per micro-batch")
    parser.add_argument("--group-size", type=int, default=8, help="completions per prompt (G)")
    parser.add_argument("--completion", type=int, default=160, help="tokens per completion")
    parser.add_argument("--image", default="600x450", help="WIDTHxHEIGHT of each prompt's image")
    parser.add_argument("--max-pixels", type=int, default=448 * 448, help="image area bound")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            parser.error("--device cuda but torch sees no CUDA device (use --device cpu)")
    report = run(args)
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
