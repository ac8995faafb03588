"""`skinr1 stop --job ID [--address ADDR]`: end a running GRPO job early without losing its work.

After the step in progress the job commits a checkpoint, writes `final/` from it and exits
successfully; the run stays unfinished, so the same `skinr1 rl` command resumes it. (`ray job stop`
kills the job mid-step instead: its resume starts from the last periodic checkpoint.)
"""

from __future__ import annotations

import argparse

from skinr1.cli.scale_cmd import add_job_arguments, send_to_job


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("stop", help="end a running GRPO job after its current step, with a checkpoint and final/")
    add_job_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from skinr1.pipeline.scaling import request_stop

    return send_to_job(args, request_stop, "stops after its current step, with a checkpoint and final/")
