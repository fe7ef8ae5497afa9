"""Apache Kafka itself, for tests and development: single-node or a small KRaft cluster on loopback.

The broker's jars come from Maven Central through Maven, once: the pom beside this
module names the broker (`org.apache.kafka:kafka_2.13`), `mvn dependency:copy-dependencies`
copies it and its runtime dependencies into a cache folder, and `java kafka.Kafka` runs
from there. Nothing else is downloaded. Each node gets its own folder: the generated
`server.properties`, its log dirs (formatted once, so data survives a restart on the
same folder) and its log file.

A node is started with `start()`, killed with `kill()` (SIGKILL: what the broker-fault
tests do) and stopped with `stop()`; `ApacheKafkaCluster` runs several nodes that are
brokers and controllers at once, with a replication factor and `min.insync.replicas`.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import IO

from .embedded import BrokerStartError, _answers_metadata, free_ports

POM = "apache-kafka.pom.xml"
CACHE_ENV = "AGENTSTREAM_KAFKA_CACHE"  # where the broker's jars are kept; default ~/.cache/agentstream
HEAP = ("-Xms128m", "-Xmx768m")
LOG4J2 = """\
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
"""


def _pom_text() -> str:
    return resources.files(__package__ or "agentstream.streams.broker").joinpath(POM).read_text()


def kafka_version() -> str:
    text = _pom_text()
    start = text.index("<kafka.version>") + len("<kafka.version>")
    return text[start:text.index("</kafka.version>")]


def _tool(name: str, why: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BrokerStartError(f"Apache Kafka needs `{name}` on PATH ({why}); install it (Debian: {_PACKAGES[name]})")
    return path


_PACKAGES = {"java": "apt-get install openjdk-17-jre-headless", "mvn": "apt-get install maven"}


def broker_jars(cache: Path | None = None) -> Path:
    """The folder of the broker's jars, resolved through Maven on first use (needs `mvn` and Maven Central)."""
    root = cache or Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "agentstream")
    folder = root / f"apache-kafka-{kafka_version()}"
    libs, done = folder / "libs", folder / "resolved"
    if done.is_file():
        return libs
    mvn = _tool("mvn", "it fetches the broker's jars from Maven Central once")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pom.xml").write_text(_pom_text())
    result = subprocess.run(
        [mvn, "-q", "-B", "-f", str(folder / "pom.xml"), "dependency:copy-dependencies",
         f"-DoutputDirectory={libs}", "-DincludeScope=runtime"],
        capture_output=True, text=True, check=False,
    )
    if result.returncode != 0 or not any(libs.glob("kafka_2.13-*.jar")):
        raise BrokerStartError(
            f"Maven could not resolve Apache Kafka {kafka_version()} into {libs} (is Maven Central reachable?): "
            f"{(result.stdout + result.stderr).strip()[-800:]}"
        )
    done.write_text("ok\n")
    return libs


def new_cluster_id() -> str:
    """A KRaft cluster ID: 16 random bytes, URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


@dataclass
class NodeSpec:
    node_id: int
    port: int
    controller_port: int
    host: str = "127.0.0.1"

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass
class ApacheKafkaNode:
    """One KRaft node (broker and controller) in its own folder."""

    spec: NodeSpec
    folder: Path
    cluster_id: str
    voters: str
    config: Mapping[str, str] = field(default_factory=dict)
    # More client listeners beside PLAINTEXT (which stays the inter-broker listener):
    # name -> (security protocol, port), e.g. {"SASL_SSL": ("SASL_SSL", 9093)}; their
    # ssl.* / sasl.* properties come through `config`.
    extra_listeners: Mapping[str, tuple[str, int]] = field(default_factory=dict)
    format_args: Sequence[str] = ()  # more `StorageTool format` arguments, e.g. ("--add-scram", "...")
    _process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return self.spec.bootstrap

    def listener(self, name: str) -> str:
        """The `host:port` of one of `extra_listeners`."""
        return f"{self.spec.host}:{self.extra_listeners[name][1]}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None and self._process.poll() is None else None

    def properties(self) -> dict[str, str]:
        spec = self.spec
        extra = {name: f"{name}://{spec.host}:{port}" for name, (_, port) in self.extra_listeners.items()}
        protocols = "".join(f",{name}:{protocol}" for name, (protocol, _) in self.extra_listeners.items())
        return {
            "process.roles": "broker,controller",
            "node.id": str(spec.node_id),
            "controller.quorum.voters": self.voters,
            "listeners": ",".join([f"PLAINTEXT://{spec.host}:{spec.port}",
                                   f"CONTROLLER://{spec.host}:{spec.controller_port}", *extra.values()]),
            "advertised.listeners": ",".join([f"PLAINTEXT://{spec.host}:{spec.port}", *extra.values()]),
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": f"PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT{protocols}",
            "log.dirs": str(self.folder / "data"),
            "num.partitions": "1",
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "log.cleaner.backoff.ms": "1000",  # compacted changelogs are cleaned soon, as the tests expect
            **self.config,
        }

    def _java(self, main: str, *args: str) -> list[str]:
        libs = broker_jars()
        return [_tool("java", "Apache Kafka runs on the JVM"), *HEAP,
                f"-Dlog4j2.configurationFile={self.folder / 'log4j2.properties'}",
                "-cp", f"{libs}/*", main, *args]

    def _prepare(self) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        config = self.folder / "server.properties"
        config.write_text("".join(f"{key}={value}\n" for key, value in self.properties().items()))
        (self.folder / "log4j2.properties").write_text(LOG4J2)
        # format once: a restart keeps the data. `--cluster-id=`: an ID may start with "-"
        if not (self.folder / "data" / "meta.properties").is_file():
            result = subprocess.run(
                self._java("kafka.tools.StorageTool", "format", f"--cluster-id={self.cluster_id}", "-c", str(config),
                           "--ignore-formatted", *self.format_args),
                capture_output=True, text=True, check=False,
            )
            if result.returncode != 0:
                raise BrokerStartError(f"formatting {self.folder / 'data'} failed: {result.stderr.strip()[-800:]}")
        return config

    def launch(self) -> None:
        """Start the process without waiting for it to answer (a cluster's nodes need each other)."""
        config = self._prepare()
        self._log = open(self.folder / "server.log", "ab")  # noqa: SIM115 - kept open while the broker runs
        self._process = subprocess.Popen(
            self._java("kafka.Kafka", str(config)), stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise BrokerStartError(
                    f"Apache Kafka node {self.spec.node_id} exited with code {self._process.returncode}; "
                    f"see {self.folder / 'server.log'}: {self.tail()}"
                )
            try:
                if _answers_metadata(self.spec.host, self.spec.port):
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise BrokerStartError(f"Apache Kafka node {self.spec.node_id} did not answer on {self.bootstrap} "
                               f"within {timeout}s; see {self.folder / 'server.log'}: {self.tail()}")

    def tail(self, chars: int = 800) -> str:
        try:
            return (self.folder / "server.log").read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def start(self, timeout: float = 120.0) -> ApacheKafkaNode:
        self.launch()
        self.wait_ready(timeout)
        return self

    def kill(self) -> None:
        """SIGKILL the broker, as a crash would: no clean shutdown, data left as it is."""
        self._end(signal.SIGKILL)

    def stop(self, timeout: float = 30.0) -> None:
        """A clean shutdown (SIGTERM), SIGKILL if it takes longer than `timeout`."""
        self._end(signal.SIGTERM, timeout)

    def _end(self, how: signal.Signals, timeout: float = 10.0) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            os.killpg(process.pid, how)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None


class ApacheKafkaCluster:
    """`nodes` KRaft nodes on loopback, each broker and controller, in subfolders of `folder`.

    With one node it is the development broker; with three, the fault tests' cluster
    (replication factor 3, `min.insync.replicas` 2 by default). Usable as a context manager.
    """

    def __init__(self, folder: Path, nodes: int = 1, *, ports: list[int] | None = None,
                 config: Mapping[str, str] | None = None, extra_listeners: Mapping[str, str] | None = None,
                 format_args: Sequence[str] = ()) -> None:
        """`extra_listeners` (name -> security protocol) gives each node one more client listener
        on a free port (see `listener`); `format_args` go to `StorageTool format` (e.g. SCRAM users)."""
        self.folder = folder
        cluster_file = folder / "cluster-id"
        folder.mkdir(parents=True, exist_ok=True)
        if not cluster_file.is_file():
            cluster_file.write_text(new_cluster_id())
        cluster_id = cluster_file.read_text().strip()
        ports_file = folder / "ports"  # the same ports after a restart: the data names its voters
        if ports is None and ports_file.is_file():
            ports = [int(p) for p in ports_file.read_text().split()]
        if ports is None or len(ports) != 2 * nodes:
            ports = free_ports(2 * nodes)
        ports_file.write_text(" ".join(map(str, ports)))
        listeners = dict(extra_listeners or {})
        spare = iter(free_ports(len(listeners) * nodes, besides=ports))  # each node's extra listeners
        specs = [NodeSpec(i + 1, ports[2 * i], ports[2 * i + 1]) for i in range(nodes)]
        voters = ",".join(f"{s.node_id}@{s.host}:{s.controller_port}" for s in specs)
        replicas = str(min(nodes, 3))
        defaults = {
            "offsets.topic.replication.factor": replicas,
            "transaction.state.log.replication.factor": replicas,
            "transaction.state.log.min.isr": str(min(nodes, 2)),
            "default.replication.factor": replicas,
            "min.insync.replicas": str(min(nodes, 2)),
        }
        self.nodes = [ApacheKafkaNode(s, folder / f"node-{s.node_id}", cluster_id, voters, {**defaults, **(config or {})},
                                      {name: (protocol, next(spare)) for name, protocol in listeners.items()},
                                      tuple(format_args))
                      for s in specs]

    @property
    def bootstrap(self) -> str:
        return ",".join(node.bootstrap for node in self.nodes)

    def listener(self, name: str) -> str:
        """The bootstrap of one of `extra_listeners` (every node's)."""
        return ",".join(node.listener(name) for node in self.nodes)

    def start(self, timeout: float = 180.0) -> ApacheKafkaCluster:
        for node in self.nodes:
            node.launch()
        try:
            for node in self.nodes:
                node.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> ApacheKafkaCluster:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


DEV_FOLDER = Path(".agentstream") / "apache-kafka"  # `broker --apache` and `dev --broker apache` share it


def dev_cluster(folder: Path = DEV_FOLDER, port: int | None = None) -> ApacheKafkaCluster:
    """The development broker: one node keeping its data in `folder`, so a restart finds its topics.

    Its ports are kept in the folder too (the data names its controller); `port` moves
    the client listener only, the controller keeps the port it was formatted with.
    """
    ports = None
    if port is not None:
        stored = folder / "ports"
        kept = stored.read_text().split() if stored.is_file() else []
        ports = [port, int(kept[1]) if len(kept) == 2 else free_ports(1, besides=[port])[0]]
    return ApacheKafkaCluster(folder, ports=ports)
