"""Ray nodes on this machine for multi-node tests: `ray start ... --block` processes on 127.0.0.1.

Ray refuses worker nodes while RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, and with it on it rewrites a
127.0.0.1 head address to the machine's network address (where the loopback-only head does not
listen). Keeping the given address and --node-ip-address=127.0.0.1 makes a real second node whose
sockets stay on loopback.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Sequence

WORKER_NODE_START = (
    "import sys; import ray._private.services as services; services.resolve_ip_for_localhost = lambda host: host; "
    "from ray.scripts.scripts import main; sys.argv = ['ray', *sys.argv[1:]]; main()"
)


def named_ports(args: Sequence[str]) -> list[int]:
    """The ports that `ray start` arguments fix (`--port=6379`, `--dashboard-port=8299`, `--address=host:port`)."""
    ports = []
    for arg in args:
        name, _, value = arg.partition("=")
        port = value.rsplit(":", 1)[-1]  # `host:port` for --address, the port itself otherwise
        if (name.endswith("-port") or name == "--address") and port.isdigit():
            ports.append(int(port))
    return ports


def ray_cli() -> str:
    return str(Path(sys.executable).with_name("ray"))


def start_node(args: list[str], log: Path, env: dict[str, str], head: bool = True,
               wrap: Sequence[str] = ()) -> subprocess.Popen:
    """`ray start ... --block` in its own session: killing that session stops exactly this node
    (`ray stop` would also stop the test session's own local cluster). Its output goes to `log`;
    `wrap` is a command prefix the node runs under (e.g. a private mount namespace)."""
    from learner.group import free_ports

    env = dict(env)
    launcher = [ray_cli()]
    if not head:
        env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "1"
        launcher = [sys.executable, "-c", WORKER_NODE_START]
        args = [*args, "--node-ip-address=127.0.0.1"]
    # Fixed default agent ports would collide with the test session's own local cluster; Ray refuses
    # to start when two of them are equal, or equal to a port the arguments name.
    agents = ("dashboard-agent-listen", "dashboard-agent-grpc", "runtime-env-agent", "metrics-export")
    ports = dict(zip(agents, free_ports(len(agents), avoid=named_ports(args))))
    return subprocess.Popen(
        [*wrap, *launcher, "start", *args, "--disable-usage-stats", "--block", "--object-store-memory=400000000",
         *(f"--{name}-port={port}" for name, port in ports.items())],
        env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True,
    )
