"""The reward actor and pool on a real local Ray cluster (loopback only)."""

from __future__ import annotations

import pytest
import ray
from reward_helpers import good, tiny_resolver

from rewards import RewardConfig, RewardSample, RewardScorer
from rewards.actor import RewardActor, RewardPool

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def resolver():
    return tiny_resolver()


def records(n: int) -> list[dict]:
    answers = ["melanoma (malignant)", "malignant melanoma", "psoriasis (benign)", "dragon pox"]
    sample = RewardSample("melanoma", "open")
    return [sample.to_record(good(answers[i % len(answers)])) for i in range(n)]


def test_actor_matches_the_pure_function(ray_local, resolver):
    config = RewardConfig.preset("open")
    actor = RewardActor.remote(config, resolver)
    batch = records(8) + [{"completion": "x", "gt_node": "nope", "mode": "open"}]
    got = ray.get(actor.score.remote(batch), timeout=60)
    assert got == RewardScorer(config, resolver).score_records(batch)
    assert [r["reward"] for r in got[:4]] == pytest.approx([2.0, 1.5, 1.0, 1.0])
    assert got[-1]["reasons"] == ["invalid_sample"]
    assert ray.get(actor.config.remote(), timeout=30)["mode"] == "open"
    ray.kill(actor)


def test_pool_round_robin_keeps_order(ray_local, resolver):
    pool = RewardPool(num_actors=2, config=RewardConfig.preset("open", format_weight=0.5), resolver=resolver,
                      num_cpus_per_actor=0.5)
    try:
        batch = records(10)
        refs = pool.submit(batch, batch_size=3)
        assert len(refs) == 4 and all(isinstance(r, ray.ObjectRef) for r in refs)
        results = pool.gather(refs, timeout=60)
        assert [r["reward"] for r in results] == pytest.approx([1.5, 1.0, 0.5, 0.5] * 2 + [1.5, 1.0])
        assert pool.score([]) == []
        assert len(pool.score(records(5), timeout=60)) == 5
    finally:
        pool.shutdown()


def test_gather_times_out_instead_of_blocking(ray_local):
    @ray.remote(num_cpus=0)
    def slow():
        import time

        time.sleep(30)

    ref = slow.remote()
    with pytest.raises(TimeoutError):
        RewardPool.gather([ref], timeout=0.2)
    ray.cancel(ref, force=True)
