"""Port choice for the processes that tests and the learner group start on this machine."""

from __future__ import annotations

import socket

from learner.group import free_port, free_ports
from loopback_nodes import named_ports


def test_free_ports_are_distinct_and_avoid_the_named_ones():
    # Probing one port at a time handed two Ray agents of one node the same port (and Ray refused to
    # start): ports chosen together must all differ, and differ from those the command already uses.
    avoided = [free_port() for _ in range(5)]
    for _ in range(50):
        ports = free_ports(8, avoid=avoided)
        assert len(set(ports)) == 8
        assert not set(ports) & set(avoided)


def test_free_ports_can_be_bound_after_they_are_chosen():
    for port in free_ports(4):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_named_ports_reads_the_ports_a_ray_start_command_fixes():
    args = ["--head", "--port=6380", "--num-cpus=8", "--dashboard-port=8299", '--resources={"a": 1}',
            "--address=127.0.0.1:41234", "--include-dashboard=true"]
    assert named_ports(args) == [6380, 8299, 41234]
    assert named_ports(["--head", "--num-cpus=2"]) == []
