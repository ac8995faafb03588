"""vLLM and the learner expand a real photograph into the same number of prompt tokens, with the
engine built from the derived settings (model.max_pixels=200704). Starts a vLLM engine: slow."""

from __future__ import annotations

import dataclasses

import pytest
from PIL import Image

from test_image_tokens import CAP, SIZES, _capped_config, _learner_image_tokens, _prompt

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def test_vllm_prompt_lengths_match_the_learner(tmp_path):
    from vllm import SamplingParams

    from rollout.engine import build_llm
    from skinr1.config import derive
    from skinr1.models.tiny import TinyModelSpec, build_tiny_model

    model = build_tiny_model(tmp_path / "model", TinyModelSpec.with_real_pixels())
    config = _capped_config()
    runtime = derive.rl_settings(config)
    # The rollout engine exactly as GRPO derives it, minus the weight-sync extension (nothing syncs
    # here) and with its engine core in processes of its own: this test process is no rollout actor
    # (an in-process engine would keep vLLM's settings frozen for the tests after it, and vLLM's
    # kernel registration trips over proxies that other tests' imports leave in this process).
    engine = dataclasses.replace(runtime.engine, worker_extension_cls=None, enable_lora=False,
                                 engine_core_in_process=False)
    assert (engine.max_pixels, engine.dtype) == (CAP, "float32")
    processor = runtime.policy.load_processor(model)
    llm = build_llm(str(model), engine)
    try:
        for width, height in SIZES:
            path = tmp_path / f"photo_{width}x{height}.jpg"
            Image.new("RGB", (width, height), (180, 120, 100)).save(path)
            tokens, learner_length = _learner_image_tokens(processor, runtime.policy, str(path))
            # What the rollout actor sends: the image resized by the same settings, the unexpanded prompt.
            request = {"prompt": _prompt(processor), "multi_modal_data": {"image": engine.images().load_image(str(path))}}
            output = llm.generate([request], SamplingParams(max_tokens=1, temperature=0.0), use_tqdm=False)[0]
            assert len(output.prompt_token_ids) == learner_length, ((width, height), len(output.prompt_token_ids), learner_length)
            image_token = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
            assert list(output.prompt_token_ids).count(image_token) == tokens <= 256
    finally:
        del llm
