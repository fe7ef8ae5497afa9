"""Ports for brokers and processors started side by side (streams/broker/embedded.py `free_ports`).

Asked for one at a time, the kernel handed the bench's Apache Kafka node the same port for
its client and controller listeners, and the node failed to format. Asked together, they differ."""

from __future__ import annotations

import socket

from agentstream.streams.broker.embedded import free_ports


def test_ports_asked_together_all_differ_and_avoid_those_already_taken() -> None:
    taken = free_ports(5)
    ports = free_ports(40, besides=taken)
    assert len(set(ports)) == 40 and not set(ports) & set(taken)
    for port in ports:  # and each is free to bind
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))
