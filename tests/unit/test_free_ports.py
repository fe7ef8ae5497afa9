"""Ports for brokers and processors started side by side (streams/broker/embedded.py `free_ports`).

Asked for one at a time, the kernel handed the bench's Apache Kafka node the same port for
its client and controller listeners, and the node failed to format. Asked together, they differ."""

from __future__ import annotations

import socket

from agentstream.streams.broker.embedded import free_port, free_ports


def test_ports_asked_together_all_differ_and_avoid_those_already_taken() -> None:
    taken = free_ports(5)
    ports = free_ports(40, besides=taken)
    assert len(set(ports)) == 40 and not set(ports) & set(taken)
    for port in ports:  # and each is free to bind
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_ports_asked_one_at_a_time_are_never_handed_out_twice() -> None:
    # A processor and a worker started one after the other were both told 59661 (CI, test_llm_examples):
    # the worker bound it, and the processor's readiness check read the worker's /ready.
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == 300
