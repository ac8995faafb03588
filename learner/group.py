"""The learner group: M `LearnerRank` Ray actors on a placement group, one torch.distributed group."""

from __future__ import annotations

import socket
from typing import Any, Sequence

from learner.grpo_config import GRPOConfig
from learner.policy_batch import TrainSample


def free_port(address: str = "127.0.0.1") -> int:
    return free_ports(1, address)[0]


def free_ports(count: int, address: str = "127.0.0.1", avoid: Sequence[int] = ()) -> list[int]:
    """`count` distinct free ports, none of them in `avoid`. Every probe socket stays bound until all
    are chosen: probing one port at a time can hand out the same port twice once a probe is closed."""
    probes: list[socket.socket] = []
    chosen: list[int] = []
    try:
        while len(chosen) < count:
            probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            probes.append(probe)  # an avoided port stays bound too, so that it is not offered again
            probe.bind((address, 0))
            if (port := probe.getsockname()[1]) not in avoid:
                chosen.append(port)
        return chosen
    finally:
        for probe in probes:
            probe.close()


def split_for_ranks(samples: list[TrainSample], ranks: int) -> list[list[TrainSample]]:
    """Equal contiguous shares (the batch size is a multiple of the rank count by construction)."""
    if len(samples) % ranks:
        raise ValueError(f"{len(samples)} samples do not split over {ranks} learner ranks")
    share = len(samples) // ranks
    return [samples[i * share : (i + 1) * share] for i in range(ranks)]


class LearnerGroup:
    def __init__(self, start, config: GRPOConfig, seed: int, placement_group=None, policy=None, wait: bool = True):
        """`start`: a `learner.policy_start.PolicyStart` or a model path; `policy`: the ranks'
        `PolicySettings` (dtype, pixel bounds; skinr1.config.derive.rl_settings). With
        `wait=False` the ranks start in the background (the GRPO driver starts its rollout engines
        meanwhile) and `wait_ready` must be called before anything else."""
        import ray

        from learner.rank import LearnerRank
        from skinr1.placement import strategy

        learner = config.learner
        self.config = config
        world = learner.num_ranks
        remote = ray.remote(LearnerRank)
        self.ranks = []
        for rank in range(world):
            options: dict[str, Any] = {"num_cpus": learner.cpus_per_rank, "num_gpus": learner.gpus_per_rank if learner.use_gpu else 0}
            if learner.custom_resources:
                options["resources"] = dict(learner.custom_resources)
            if placement_group is not None:  # bundle i holds rank i
                options["scheduling_strategy"] = strategy(placement_group, rank)
            self.ranks.append(remote.options(**options).remote(rank, world, start, config, seed, policy))
        # Every rank reaches rank 0's node, wherever the placement group put it: Ray hands rank 0's
        # endpoint to every rank's setup once it is known, without a round trip through the driver.
        endpoint = self.ranks[0].rendezvous.remote()
        self._setups = [r.setup.remote(endpoint) for r in self.ranks]
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        """Block until every rank has joined the group and built its engine; raises a rank's
        start-up error."""
        import ray

        ray.get(self._setups)

    def train_step(self, samples: list[TrainSample], step_size: float) -> dict[str, float]:
        import ray

        shares = split_for_ranks(samples, len(self.ranks))
        reports = ray.get([r.train_step.remote(share, step_size) for r, share in zip(self.ranks, shares)])
        # Loss parts are already shares of the step's token mean: sum them over ranks.
        summed = {k: sum(r[k] for r in reports) for k in ("loss", "policy", "kl", "clipped", "ratio_gap", "entropy")}
        return {**summed, "lr": reports[0]["lr"], "learner_s": max(r["seconds"] for r in reports)}

    def policy_logprobs(self, samples: list[TrainSample]) -> list[list[float]]:
        """Per-token log-probs of `samples` under the current policy (every rank computes them, so
        sharded parameters are gathered; rank 0's answer is returned)."""
        import ray

        return ray.get([r.policy_logprobs.remote(samples) for r in self.ranks])[0]

    def export_policy(self) -> dict[str, bytes]:
        import ray

        return ray.get([r.export_policy.remote() for r in self.ranks])[0]

    def export_weight_buckets(self, bucket_bytes: int):
        import ray

        return ray.get([r.export_weight_buckets.remote(bucket_bytes) for r in self.ranks])[0]

    def publish_weight_buckets(self, bucket_bytes: int) -> dict[str, Any]:
        import ray

        return ray.get([r.publish_weight_buckets.remote(bucket_bytes) for r in self.ranks])[0]

    def publish_lora_factors(self, with_base: bool) -> dict[str, Any]:
        import ray

        return ray.get([r.publish_lora_factors.remote(with_base) for r in self.ranks])[0]

    def export_to_shared_memory(self, version: int, store_name: str, bucket_bytes: int) -> dict[str, Any]:
        import ray

        return ray.get([r.export_to_shared_memory.remote(version, store_name, bucket_bytes) for r in self.ranks])[0]

    def clear_shared_memory(self) -> None:
        import ray

        ray.get(self.ranks[0].clear_shared_memory.remote())

    def save(self, target: str) -> list[dict[str, int] | None]:
        """Every rank's part of a checkpoint (`LearnerRank.save`); for a bucket `target`, the
        {file: size} each rank uploaded, in rank order."""
        import ray

        return ray.get([r.save.remote(target) for r in self.ranks])

    def load(self, source: str) -> None:
        import ray

        ray.get([r.load.remote(source) for r in self.ranks])

    def shutdown(self) -> None:
        import ray

        try:
            ray.get([r.shutdown.remote() for r in self.ranks], timeout=60)
        finally:
            for r in self.ranks:
                ray.kill(r)
