"""`skinr1 serve --checkpoint DIR [--replicas N] [--host 127.0.0.1 --port 8000] [key=value ...]`.

Serves a policy with Ray Serve (each replica a vLLM engine): POST /v1/diagnose, the OpenAI-compatible
POST /v1/chat/completions, GET /v1/models and GET /healthz. Settings come from `ServeConfig`
(skinr1/serving/config.py): an optional `--config` YAML, then key=value overrides, then the flags.
Locally it starts a loopback Ray node; with --address or $RAY_ADDRESS it deploys to that cluster.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("serve", help="serve a checkpoint over HTTP with Ray Serve + vLLM (docs/serving.md)")
    parser.add_argument("--checkpoint", required=True, help="adapter dir (e.g. runs/demo/rl/final), merged model dir or hub id")
    parser.add_argument("--config", help="ServeConfig YAML (optional)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="ServeConfig overrides, e.g. max_tokens=512")
    parser.add_argument("--host", help="address the HTTP proxy binds (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="HTTP port (default 8000)")
    parser.add_argument("--replicas", type=int, help="fixed number of replicas (one vLLM engine each)")
    parser.add_argument("--min-replicas", type=int, help="autoscaling lower bound (with --max-replicas)")
    parser.add_argument("--max-replicas", type=int, help="autoscale between --min-replicas and this")
    parser.add_argument("--name", help="model name reported to clients (default: from the checkpoint path)")
    parser.add_argument("--address", help="Ray cluster to deploy to (default: $RAY_ADDRESS, else a local node)")
    parser.add_argument("--num-cpus", type=int, help="logical CPUs of a local Ray node")
    parser.add_argument("--detach", action="store_true",
                        help="return once deployed, leaving the app on the cluster (needs --address or $RAY_ADDRESS)")
    parser.set_defaults(func=run)


def flag_overrides(args: argparse.Namespace) -> list[str]:
    """Flags as key=value overrides (applied last, so flags win over the YAML and overrides)."""
    pairs = {
        "host": args.host, "port": args.port, "replicas": args.replicas,
        "min_replicas": args.min_replicas, "max_replicas": args.max_replicas, "model_name": args.name,
    }
    return [f"{key}={value}" for key, value in pairs.items() if value is not None]


def run(args: argparse.Namespace) -> int:
    import os
    import signal
    import sys
    import time

    from skinr1.cluster import init_ray, shutdown_ray
    from skinr1.config.loader import load_config
    from skinr1.serving.config import ServeConfig, check_exposure, resolve_token
    from skinr1.serving.policy import resolve_policy

    config = load_config(ServeConfig, args.config, list(args.overrides or []) + flag_overrides(args))
    policy = resolve_policy(args.checkpoint, name=config.model_name)
    token = resolve_token(config)
    check_exposure(config, token)  # before starting anything
    address = args.address or os.environ.get("RAY_ADDRESS") or None
    if args.detach and not address:
        raise ValueError("--detach needs a running cluster (--address or $RAY_ADDRESS): a local node ends with this command")

    init_ray(address=address, num_cpus=args.num_cpus)
    from skinr1.serving.app import start

    # SIGTERM (docker stop, kill) takes the same clean path as Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        start(config, policy, token)
        url = f"http://{config.host}:{config.port}"
        print(f"serving {policy.name} (policy_version {policy.policy_version}) at {url}", flush=True)
        print(f"  POST {url}/v1/diagnose   POST {url}/v1/chat/completions   GET {url}/healthz", flush=True)
        print(f"  auth: {'bearer token from $' + config.token_env if token else 'none (no $' + config.token_env + ')'}",
              flush=True)
        if args.detach:
            return 0
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0
    finally:
        if not args.detach:
            stop(config.app_name, local=not address)
            if not address:
                shutdown_ray()


def stop(app_name: str, local: bool) -> None:
    """Remove our application; on a node we started, stop Serve too (a shared cluster keeps it)."""
    import sys

    from ray import serve

    try:
        serve.delete(app_name)
        if local:
            serve.shutdown()
    except Exception as error:  # cleanup must not hide the error that ended the command
        print(f"skinr1 serve: cleanup: {error}", file=sys.stderr)
