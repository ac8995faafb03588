"""`skinr1 serve --checkpoint DIR [--replicas N] [--host 127.0.0.1 --port 8000] [key=value ...]`.

Serves a policy with Ray Serve (each replica a vLLM engine): POST /v1/diagnose, the OpenAI-compatible
POST /v1/chat/completions, GET /v1/models and GET /healthz. Settings come from `ServeConfig`
(skinr1/serving/config.py): an optional `--config` YAML, then key=value overrides, then the flags.
Locally it starts a loopback Ray node; with --address or $RAY_ADDRESS it deploys to that cluster.
SIGTERM and SIGINT stop everything this command started, vLLM's engine processes included.
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
    parser.add_argument("--ssl-certfile", help="PEM certificate: serve HTTPS only (with --ssl-keyfile)")
    parser.add_argument("--ssl-keyfile", help="PEM private key of --ssl-certfile")
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
        "ssl_certfile": getattr(args, "ssl_certfile", None), "ssl_keyfile": getattr(args, "ssl_keyfile", None),
    }
    return [f"{key}={value}" for key, value in pairs.items() if value is not None]


def run(args: argparse.Namespace) -> int:
    import os
    import signal
    import time

    from skinr1.cluster import init_ray
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

    # Only the token's digest leaves this process: a local Ray node and every worker, replica and
    # engine under it inherit this environment.
    os.environ.pop(config.token_env, None)
    local = not address
    if local:
        become_subreaper()
    # SIGTERM (docker stop, kill) and Ctrl-C take the same clean path.
    signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
    signal.signal(signal.SIGINT, raise_keyboard_interrupt)
    try:
        init_ray(address=address, num_cpus=args.num_cpus)
        from skinr1.serving.app import start

        start(config, policy, token)
        url = f"{config.scheme}://{config.host}:{config.port}"
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
            # A second signal must not interrupt the cleanup that stops the engines.
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            stop(config, local=local)


def raise_keyboard_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def become_subreaper() -> None:
    """Make this process the reaper of its orphaned descendants (Linux), so that engine processes
    whose Ray worker died first are still ours to find and stop."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return
    PR_SET_CHILD_SUBREAPER = 36
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # without it, descendants are still found while their parents live


def stop(config, local: bool, grace_s: float = 30.0) -> None:
    """Remove our applications; on a node we started, also stop Serve and Ray and then every process
    still running under this one (vLLM engine cores and workers are not Ray's to stop). The graceful
    part gets `grace_s`: when the whole process group was signalled, Ray's own processes may already
    be gone and its calls would wait for them."""
    import threading

    import psutil

    descendants = psutil.Process().children(recursive=True) if local else []
    graceful = threading.Thread(target=_stop_serve_and_ray, args=(config, local), daemon=True)
    graceful.start()
    graceful.join(grace_s)
    if local:
        stop_processes(descendants + psutil.Process().children(recursive=True))


def _stop_serve_and_ray(config, local: bool) -> None:
    import sys

    import ray

    if not ray.is_initialized():
        return  # Ray never started (or is gone): a Serve call would start a new node
    try:
        from ray import serve

        from skinr1.cluster import shutdown_ray
        from skinr1.serving.app import stop as stop_apps

        stop_apps(config)
        if local:
            serve.shutdown()
            shutdown_ray()
    except Exception as error:  # cleanup must not hide the error that ended the command
        print(f"skinr1 serve: cleanup: {error}", file=sys.stderr)


def stop_processes(processes, grace_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after `grace_s`, for each process still alive."""
    import psutil

    alive = []
    for process in {p.pid: p for p in processes}.values():
        try:
            process.terminate()
            alive.append(process)
        except psutil.NoSuchProcess:
            pass
    _, survivors = psutil.wait_procs(alive, timeout=grace_s)
    for process in survivors:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(survivors, timeout=grace_s)
