"""`skinr1 scale --job ID --rollout-workers N [--address ADDR]`: resize a running job's rollout pool.

The request is taken between two steps: new actors get the current weights before their first
prompt, removed ones finish their work first, so no sample is lost or duplicated.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable


def add_job_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments that name a running GRPO job and its cluster."""
    parser.add_argument("--job", required=True, help="the job's submission id (`ray job list`) or Ray job id")
    parser.add_argument("--address", default=None,
                        help="the cluster's GCS address, e.g. 127.0.0.1:6379 (default: $RAY_ADDRESS)")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("scale", help="change the number of rollout workers of a running GRPO job")
    add_job_arguments(parser)
    parser.add_argument("--rollout-workers", type=int, required=True, metavar="N", help="rollout actors wanted")
    parser.set_defaults(func=run)


def send_to_job(args: argparse.Namespace, request: Callable[[str], dict[str, Any]], done: str) -> int:
    """Connect to the job's cluster, send `request(job_id)`, print the job's status and `done`."""
    import os

    from skinr1.cluster import init_ray, shutdown_ray

    if not (args.address or os.environ.get("RAY_ADDRESS")):
        print("error: give --address (the cluster's GCS address) or set RAY_ADDRESS", file=sys.stderr)
        return 2
    init_ray(address=args.address, log_to_driver=False)
    try:
        status = request(args.job)
    except (LookupError, ValueError) as error:
        # A ValueError raised inside the job's control actor arrives wrapped; show its message.
        print(f"error: {getattr(error, 'cause', None) or error}", file=sys.stderr)
        return 2
    finally:
        shutdown_ray()
    print(json.dumps(status, indent=2))
    print(f"job {args.job}: {done}")
    return 0


def run(args: argparse.Namespace) -> int:
    from skinr1.pipeline.scaling import request_scale

    return send_to_job(args, lambda job: request_scale(job, args.rollout_workers),
                       f"the rollout pool moves to {args.rollout_workers} actors at the next step boundary")
