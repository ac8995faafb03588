"""Real image shapes on CPU: a tiny model whose processor keeps Qwen2.5-VL's released pixel bounds,
photographs of real dataset sizes, model.max_pixels=200704 (448x448). The learner, evaluation and
serving see the same <= 256 image tokens per image; prompts that cannot fit are skipped, not sent."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

pytestmark = pytest.mark.filterwarnings("error::FutureWarning")  # no deprecated processor kwargs

from skinr1.config import derive
from skinr1.config.schema import load_run_config
from skinr1.models.settings import PolicySettings, image_token_count, prompt_token_count
from skinr1.pipeline.prompt_budget import PromptBudget, oversized_prompt

CONFIGS = Path(__file__).resolve().parents[1] / "skinr1" / "configs"
# Dermoscopy (HAM10000 / ISIC: 600x450) and clinical photographs, landscape and portrait.
SIZES = [(600, 450), (450, 600), (1024, 768), (768, 1024), (3000, 2000), (2000, 3000)]
CAP = 200704
PROMPT_TEXT = "What is the diagnosis?"


@pytest.fixture(scope="module")
def real_pixels_model(tmp_path_factory):
    from skinr1.models.tiny import TinyModelSpec, build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-real-pixels"), TinyModelSpec.with_real_pixels())


@pytest.fixture(scope="module")
def photographs(tmp_path_factory) -> dict[tuple[int, int], str]:
    root = tmp_path_factory.mktemp("photos")
    paths = {}
    for width, height in SIZES:
        path = root / f"photo_{width}x{height}.jpg"
        Image.new("RGB", (width, height), (180, 120, 100)).save(path, quality=80)
        paths[(width, height)] = str(path)
    return paths


def _prompt(processor) -> str:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROMPT_TEXT}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def _capped_config():
    return load_run_config(CONFIGS / "demo.yaml", [f"model.max_pixels={CAP}"])


def _learner_image_tokens(processor, settings: PolicySettings, image: str) -> tuple[int, int]:
    """(image tokens, prompt length) of the learner's real batch for one completion."""
    from learner.policy_batch import TrainSample, encode_batch

    prompt = _prompt(processor)
    completion = processor.tokenizer.encode("<final diagnosis>melanoma</final diagnosis>")
    batch = encode_batch(processor, [TrainSample(prompt, image, completion, [0.0] * len(completion), 1.0)], settings)
    ids = batch["prompts"]["input_ids"][0]
    image_token = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    grid = batch["prompts"]["image_grid_thw"][0]
    merged = int(grid.prod()) // 4
    count = int((ids == image_token).sum())
    assert count == merged, (count, merged)  # placeholders match the image features
    return count, len(ids)


def test_every_stage_sees_the_same_capped_image_tokens(real_pixels_model, photographs):
    from rollout.engine import EngineSettings, engine_kwargs
    from skinr1.serving.policy import ServedPolicy
    from skinr1.serving.service import serving_engine_settings

    config = _capped_config()
    learner = derive.rl_settings(config).policy
    evaluation = derive.eval_settings(config).engine.images()
    served = ServedPolicy("p", str(real_pixels_model), None, metadata={"model_settings": learner.to_dict()})
    serving = serving_engine_settings(served, EngineSettings()).images()
    processors = {name: s.load_processor(real_pixels_model) for name, s in
                  (("learner", learner), ("eval", evaluation), ("serve", serving))}
    for (width, height), path in photographs.items():
        tokens, prompt_length = _learner_image_tokens(processors["learner"], learner, path)
        assert 100 < tokens <= CAP // 784 == 256, ((width, height), tokens)
        # The prompt-length check counts exactly what the learner's processor produced.
        assert prompt_token_count(processors["learner"], learner, _prompt(processors["learner"]), (width, height)) == prompt_length
        for name, settings in (("eval", evaluation), ("serve", serving)):
            fed = settings.fed_size(height, width)
            assert image_token_count(processors[name], *fed) == tokens, (name, (width, height))
    # vLLM's processor is given the same bound (its own resize is then the identity, as the learner's).
    assert engine_kwargs("m", derive.rl_settings(config).engine)["mm_processor_kwargs"] == {"max_pixels": CAP}


def test_without_the_cap_real_photographs_explode_into_thousands_of_tokens(real_pixels_model):
    unbounded = PolicySettings()
    processor = unbounded.load_processor(real_pixels_model)
    assert image_token_count(processor, *unbounded.fed_size(2000, 3000)) > 7000
    assert image_token_count(processor, *unbounded.fed_size(450, 600)) > 300  # > 256 even for dermoscopy


def test_portrait_and_landscape_cost_the_same(real_pixels_model):
    settings = PolicySettings(max_pixels=CAP)
    processor = settings.load_processor(real_pixels_model)
    for width, height in SIZES[::2]:
        assert image_token_count(processor, *settings.fed_size(height, width)) == \
            image_token_count(processor, *settings.fed_size(width, height))
        # The processor's own resize honours the bound too (vLLM relies on it, not on ours).
        assert image_token_count(processor, height, width) <= 256


@pytest.mark.parametrize("tokens, limit, fits", [(10, 11, True), (11, 11, False), (5000, 4096, False), (1, 2, True)])
def test_oversized_prompt_rule(tokens, limit, fits):
    problem = oversized_prompt("ham10000:ISIC_1", tokens, limit)
    assert (problem is None) == fits
    if problem:
        assert "ham10000:ISIC_1" in problem and str(tokens) in problem and str(limit) in problem


def test_prompt_budget_counts_and_names_skipped_records(real_pixels_model, photographs, caplog):
    settings = PolicySettings(max_pixels=CAP)
    budget = PromptBudget(settings.load_processor(real_pixels_model), settings, max_model_len=200)
    prompt = _prompt(budget.processor)
    assert budget.fits("small", prompt, photographs[(600, 450)]) is False  # 252 image tokens > 200
    assert budget.fits("small", prompt, photographs[(600, 450)]) is False  # counted once
    assert budget.skipped == ["small"] and "record small" in caplog.text
    roomy = PromptBudget(budget.processor, settings, max_model_len=512)
    assert all(roomy.fits(str(size), prompt, path) for size, path in photographs.items())


def test_prompt_budget_skips_a_record_whose_image_is_broken(real_pixels_model, tmp_path, caplog):
    settings = PolicySettings(max_pixels=CAP)
    budget = PromptBudget(settings.load_processor(real_pixels_model), settings, max_model_len=512)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not a jpeg")
    assert budget.fits("ddi:0042", _prompt(budget.processor), str(broken)) is False
    assert budget.fits("ddi:0043", _prompt(budget.processor), str(tmp_path / "gone.jpg")) is False
    assert budget.skipped == ["ddi:0042", "ddi:0043"]
    assert "record ddi:0042: its image cannot be used (not_an_image" in caplog.text and "missing" in caplog.text


def test_grpo_request_building_skips_oversized_prompts(real_pixels_model, photographs, tmp_path):
    """The GRPO prompt stream (no Ray needed for it) skips a record whose prompt cannot fit,
    names it, and keeps drawing until the step has its prompts; when nothing fits it says so."""
    from skinr1.data.records import Record, write_jsonl
    from skinr1.pipeline.rl_prompts import PromptStream, mapped_records
    from skinr1.taxonomy import default_taxonomy

    manifest = tmp_path / "sparse.jsonl"
    write_jsonl(manifest, [Record("derm:small", photographs[(600, 450)], "melanoma", 3, "synthetic", "melanoma"),
                           Record("clinic:huge", photographs[(3000, 2000)], "melanoma", 3, "synthetic", "melanoma")])
    # No pixel cap: the 3000x2000 photograph is ~7.6k image tokens, over the 1024-token context.
    config = load_run_config(CONFIGS / "demo.yaml", [f"run_dir={tmp_path}", "rl.validate_every=0", "rl.probe_every=0"])
    runtime = derive.rl_settings(config)
    budget = PromptBudget(runtime.policy.load_processor(real_pixels_model), runtime.policy, runtime.max_model_len)
    taxonomy = default_taxonomy()
    stream = PromptStream(mapped_records(str(manifest), taxonomy), budget, config.rl.mode, taxonomy)
    requests = stream.next_requests(3)
    assert [r.metadata["record_id"] for r in requests] == ["derm:small"] * 3
    assert budget.skipped == ["clinic:huge"] and stream.cursor > 3
    budget.max_model_len = 100
    with pytest.raises(ValueError, match="no record of the RL manifest fits"):
        stream.next_requests(1)
