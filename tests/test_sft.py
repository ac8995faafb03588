"""SFT with Ray Train + DeepSpeed + LoRA on the tiny model: resume after interruption, vLLM loading."""

from __future__ import annotations

import json

import pytest

from learner.lora import LoraSettings
from learner.sft import latest_checkpoint, run_sft
from learner.sft_config import SFTConfig
from skinr1.metrics import read_metrics

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def sft_inputs(tmp_path_factory, tiny_model_dir):
    """A small verified trajectory set built by the real pipeline pieces."""
    from skinr1.data.synthetic import synthesize
    from skinr1.trajectories.build import run as build_trajectories
    from skinr1.trajectories.config import TrajectoriesConfig

    root = tmp_path_factory.mktemp("sft-data")
    synthesize(root / "data", seed=0, scale=0.1)
    config = TrajectoriesConfig(input=str(root / "data" / "dense.jsonl"), output_dir=str(root / "traj"),
                                include_system_prompt=False)
    report = build_trajectories(config)
    assert report["totals"]["accepted"] == report["totals"]["records"]
    return tiny_model_dir, root / "traj" / "sft.jsonl"


def _config(**overrides) -> SFTConfig:
    settings = dict(num_workers=2, epochs=2, micro_batch_size=2, grad_accum_steps=2, learning_rate=2e-3,
                    warmup_ratio=0.1, checkpoint_every=2, max_length=512, lora=LoraSettings(rank=16, alpha=32, dropout=0.0))
    settings.update(overrides)
    return SFTConfig(**settings)


def _samples_per_step(run_dir) -> dict[int, list[str]]:
    return {row["step"]: row["samples"] for row in read_metrics(run_dir / "metrics.jsonl")}


def test_interrupted_run_resumes_with_the_same_sample_order(sft_inputs, tmp_path, ray_local):
    model, data = sft_inputs
    straight = run_sft(str(model), str(data), tmp_path / "straight", _config())
    reference = _samples_per_step(tmp_path / "straight")
    total = max(reference)
    assert total >= 4

    interrupted = tmp_path / "interrupted"
    with pytest.raises(Exception, match="stopped after step 2"):
        run_sft(str(model), str(data), interrupted, _config(stop_after_step=2))
    assert json.loads((latest_checkpoint(interrupted) / "trainer_state.json").read_text())["step"] == 2
    assert not (interrupted / "final").exists()

    final = run_sft(str(model), str(data), interrupted, _config())
    rows = read_metrics(interrupted / "metrics.jsonl")
    steps = [row["step"] for row in rows]
    assert steps == list(range(1, total + 1))  # the counter continues at 3: nothing repeated or skipped
    assert _samples_per_step(interrupted) == reference  # the same samples, in the same order
    losses = [row["loss"] for row in read_metrics(tmp_path / "straight" / "metrics.jsonl")]
    assert losses[-1] < losses[0]
    for directory in (straight, final):
        assert (directory / "adapter_model.safetensors").is_file()
        assert (directory / "processor_config.json").is_file()


def test_sft_output_loads_in_vllm_and_generates(sft_inputs, tmp_path, ray_local):
    from PIL import Image
    from vllm import SamplingParams
    from vllm.lora.request import LoRARequest

    from learner.export import merge_adapter
    from rollout.engine import EngineSettings, build_llm

    model, data = sft_inputs
    final = run_sft(str(model), str(data), tmp_path / "run", _config(epochs=1, checkpoint_every=100))
    merged = merge_adapter(final, tmp_path / "merged")
    assert (merged / "model.safetensors").is_file()
    image = Image.new("RGB", (64, 64), (25, 25, 80))
    prompt = "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What is the diagnosis?<|im_end|>\n<|im_start|>assistant\n"
    llm = build_llm(str(model), EngineSettings(max_model_len=512, enable_lora=True, max_lora_rank=16))
    try:
        outputs = llm.generate(
            [{"prompt": prompt, "multi_modal_data": {"image": image}}],
            SamplingParams(max_tokens=24, temperature=0.0),
            lora_request=LoRARequest("sft", 1, str(final)),
        )
        assert len(outputs[0].outputs[0].token_ids) > 0
    finally:
        del llm
