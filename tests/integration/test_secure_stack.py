"""Security end to end: the API token on the session's broker; TLS + SASL on a real Apache Kafka.

The SASL_SSL part starts its own single Apache Kafka node: a `SASL_SSL` client listener
with a CA and certificates made here (tests/tls.py), client certificates required, and a
SCRAM-SHA-256 user created when the storage is formatted. Topics (through the CLI), a
processor and a worker (subprocesses, at DEBUG) and `AgentClient` all go through that
listener; a wrong password or a TLS client on the plaintext port fails at once with the
setting to fix; and the DEBUG logs of both components never show the secrets, not even
the ones a step's input carries.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from agentstream.agents import AgentClient
from agentstream.agents.exceptions import ApiUnavailableError
from agentstream.streams.broker import BrokerProfile
from agentstream.streams.broker.apache import ApacheKafkaCluster
from agentstream.streams.devstack import ManagedProcess
from agentstream.streams.exceptions import BrokerUnavailableError
from agentstream.streams.kafka import ensure_topics, partition_counts
from agentstream.streams.security import kafka_options
from agentstream.streams.settings import Settings
from agentstream.topics import AgentStatus, TopicSpec
from support import PARTITIONS, Cluster, get_json, poll
from tls import Certificates, make_certificates, openssl_missing

pytestmark = pytest.mark.integration

SCRAM_USER = "agentstream-test"
MECHANISM = "SCRAM-SHA-256"
FAIL_FAST_S = 10.0  # a refused client must give up well within this (aiokafka's own timeouts are 40 s and more)


async def poll_async(check: Callable[[], Awaitable[Any]], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := await check():
            return result
        await asyncio.sleep(0.2)
    raise AssertionError(f"{what} not reached within {timeout}s")


def http(url: str, *, token: str | None = None, method: str = "GET", body: Any = None) -> int:
    """The status of one request (0 when nothing answered)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={**headers, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return 0


# --- the API token (on the session's broker) --------------------------------------------------


async def test_a_processor_with_an_api_token_answers_401_without_it_and_200_with_it(cluster: Cluster) -> None:
    token = "api-" + uuid.uuid4().hex
    processor = cluster.processor(app="shapes", env={"AGENTSTREAM_API_TOKEN": token}).start()
    processor.wait_ready()  # /ready stays open
    url = processor.url
    base = Settings(kafka_bootstrap=cluster.bootstrap, topic_prefix=cluster.prefix, api_url=url)
    async with AgentClient(Settings(**{**base.model_dump(), "api_token": token})) as client:
        await client.schedule_agent("Greeter", "greeter-1", "ada")
        await poll(lambda: http(f"{url}/agents/greeter-1", token=token) == 200, timeout=30, what="the agent's state")
        assert (await client.get_agent_state("greeter-1"))["agent_type"] == "Greeter"

    protected = [
        ("GET", "/agents/greeter-1"), ("GET", "/agent-types"), ("GET", "/agents/greeter-1/stream?follow=false"),
        ("POST", "/agents/greeter-2"), ("POST", "/agents/greeter-1/events/hello"),
        ("GET", "/router/"), ("GET", "/table/"), ("GET", "/table/agents/"), ("GET", "/graph/"), ("GET", "/stats/"),
        ("GET", "/"), ("GET", "/no-such-page"),
    ]
    for method, path in protected:
        body = {"agent_type": "Greeter", "input": "x"} if method == "POST" else None
        assert http(url + path, method=method, body=body) == 401, path
        assert http(url + path, method=method, body=body, token="wrong-" + token) == 401, path
    for path in ("/agents/greeter-1", "/agent-types", "/agents/greeter-1/stream?follow=false"):
        assert http(url + path, token=token) == 200, path
    for path in ("/router/", "/table/"):  # Faust's debug pages: behind the token, and off
        assert http(url + path, token=token) == 404, path
    for path in ("/health", "/ready", "/metrics"):
        assert http(url + path) == 200, path

    async with AgentClient(base) as tokenless:  # no AGENTSTREAM_API_TOKEN: told so, not a bare 401
        with pytest.raises(ApiUnavailableError, match="AGENTSTREAM_API_TOKEN"):
            await tokenless.get_agent_state("greeter-1")

    env = {**os.environ, **cluster.env, "AGENTSTREAM_KAFKA_BOOTSTRAP": cluster.bootstrap, "AGENTSTREAM_API_URL": url}
    cli = [sys.executable, "-m", "agentstream.streams.cli", "state", "greeter-1"]
    allowed = subprocess.run(cli, env={**env, "AGENTSTREAM_API_TOKEN": token}, capture_output=True, text=True,
                             timeout=60, check=False)
    assert allowed.returncode == 0 and "Greeter" in allowed.stdout, allowed.stderr
    refused = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert refused.returncode == 1 and "AGENTSTREAM_API_TOKEN" in refused.stderr


async def test_processors_with_an_api_token_pass_it_on_when_they_ask_the_agents_owner(cluster: Cluster) -> None:
    # A GET of another processor's agent is forwarded (Faust's table routing), and an event
    # is checked against the owner's record: both requests must carry the token.
    token = "api-" + uuid.uuid4().hex
    processors = [cluster.processor(name, app="shapes", env={"AGENTSTREAM_API_TOKEN": token}).start()
                  for name in ("processor-a", "processor-b")]
    for processor in processors:
        processor.wait_ready()

    def assignment_split() -> bool:
        owned = [get_json(f"{p.url}/ready")[1]["assigned_partitions"] for p in processors]
        return all(n > 0 for n in owned) and sum(owned) == PARTITIONS

    await poll(assignment_split, what="both processors own partitions")
    agents = [f"chat-{i}" for i in range(8)]  # spread over both processors' partitions
    settings = Settings(kafka_bootstrap=cluster.bootstrap, topic_prefix=cluster.prefix, api_url=processors[0].url,
                        api_token=token)
    async with AgentClient(settings) as client:
        for agent_id in agents:
            await client.schedule_agent("Chat", agent_id)
    for agent_id in agents:
        for processor in processors:
            url = f"{processor.url}/agents/{agent_id}"
            await poll(lambda: http(url, token=token) == 200, timeout=30, what=f"GET {url} with the token")
    for i, agent_id in enumerate(agents):
        asked = processors[i % 2].url
        assert http(f"{asked}/agents/{agent_id}/events/end", method="POST", body={}, token=token) == 202, asked


# --- SASL_SSL on Apache Kafka -----------------------------------------------------------------


@dataclass
class SecureBroker:
    cluster: ApacheKafkaCluster
    certs: Certificates
    password: str
    token: str

    @property
    def bootstrap(self) -> str:
        return self.cluster.listener("SASL_SSL")

    def env(self, **changes: str) -> dict[str, str]:
        """The `AGENTSTREAM_*` variables of a component that talks to the broker through SASL_SSL."""
        return {
            "AGENTSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "AGENTSTREAM_KAFKA_SSL_CAFILE": str(self.certs.ca),
            "AGENTSTREAM_KAFKA_SSL_CERTFILE": str(self.certs.client_cert),
            "AGENTSTREAM_KAFKA_SSL_KEYFILE": str(self.certs.client_key),
            "AGENTSTREAM_KAFKA_SSL_KEY_PASSWORD": self.certs.key_password,
            "AGENTSTREAM_KAFKA_SASL_MECHANISM": MECHANISM,
            "AGENTSTREAM_KAFKA_SASL_USERNAME": SCRAM_USER,
            "AGENTSTREAM_KAFKA_SASL_PASSWORD": self.password,
            "AGENTSTREAM_API_TOKEN": self.token,
            **{f"AGENTSTREAM_{key.upper()}": value for key, value in changes.items()},
        }

    def settings(self, cluster: Cluster, **changes: Any) -> Settings:
        """What `env()` sets, as the Settings of an in-process client."""
        values = {key.removeprefix("AGENTSTREAM_").lower(): value for key, value in self.env().items()}
        return Settings(**{**values, "kafka_bootstrap": self.bootstrap, "topic_prefix": cluster.prefix, **changes})


def _missing_tools() -> str | None:
    missing = [tool for tool in ("java", "mvn") if shutil.which(tool) is None]
    if missing:
        return f"the SASL_SSL test runs Apache Kafka, which needs {' and '.join(missing)} on PATH"
    return openssl_missing()


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    if (reason := _missing_tools()) is not None:
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("secure-kafka")
    certs = make_certificates(folder / "certs", key_password="key-" + uuid.uuid4().hex)
    password = "scram-" + uuid.uuid4().hex
    listener = "listener.name.sasl_ssl."
    config = {
        "sasl.enabled.mechanisms": MECHANISM,
        f"{listener}{MECHANISM.lower()}.sasl.jaas.config":
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
        f"{listener}ssl.keystore.type": "PEM",
        f"{listener}ssl.keystore.location": str(certs.broker_keystore),
        f"{listener}ssl.truststore.type": "PEM",
        f"{listener}ssl.truststore.location": str(certs.ca),
        f"{listener}ssl.client.auth": "required",
    }
    cluster = ApacheKafkaCluster(
        folder / "kafka", 1, config=config, extra_listeners={"SASL_SSL": "SASL_SSL"},
        format_args=["--add-scram", f"{MECHANISM}=[name={SCRAM_USER},password={password}]"],
    )
    with cluster:
        yield SecureBroker(cluster, certs, password, token="api-" + uuid.uuid4().hex)


@pytest.fixture(scope="module")
def secure_cluster(secure_broker: SecureBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One slice of the secure broker, its topics created through SASL_SSL by `agentstream topics create`.

    The processor's changelog is created ahead too (by `ensure_topics` with the SASL_SSL
    options): when Faust creates it at the processor's first start, a broker slow to
    publish the new topic's metadata (a loaded machine) leaves the processor's consumer
    without the changelog until its next metadata refresh, minutes later.
    """
    suffix = uuid.uuid4().hex[:8]
    cluster = Cluster(secure_broker.bootstrap, f"s{suffix}.", f"app-{suffix}", tmp_path_factory.mktemp("stack"),
                      BrokerProfile.real_kafka())
    env = {**os.environ, **cluster.env, **secure_broker.env(kafka_bootstrap=secure_broker.bootstrap, partitions="2")}
    created = subprocess.run([sys.executable, "-m", "agentstream.streams.cli", "topics", "create"], env=env,
                             capture_output=True, text=True, timeout=120, check=False)
    assert created.returncode == 0, created.stdout + created.stderr
    assert "share 2 partitions" in created.stdout
    security = kafka_options(secure_broker.settings(cluster))
    changelog = TopicSpec(f"{cluster.app_id}-agents-changelog", 2, cleanup_policy="compact", retention_ms=None)

    async def create_changelog() -> None:
        await ensure_topics(cluster.bootstrap, [changelog], security)
        await poll_async(lambda: partition_counts(cluster.bootstrap, [changelog.name], security),
                         what="the changelog in the broker's metadata")

    asyncio.run(create_changelog())
    yield cluster
    for process in cluster.processes:
        process.stop()


@pytest.fixture(scope="module")
def secure_stack(secure_broker: SecureBroker, secure_cluster: Cluster) -> Iterator[tuple[ManagedProcess, ManagedProcess]]:
    """A processor and a worker at DEBUG on the secure listener, with the API token set."""
    env = secure_broker.env(log_level="DEBUG")
    processor = secure_cluster.processor(app="shapes", env=env).start()
    worker = secure_cluster.worker(app="shapes", env=env).start()
    processor.wait_ready(timeout=90)
    worker.wait_ready(timeout=60)
    yield processor, worker


async def readable(stack: tuple[ManagedProcess, ManagedProcess], token: str, agent_id: str) -> None:
    """Wait until the processor serves the agent's state.

    On Apache Kafka a GET that comes before the processor's first changelog write
    answers 500 (Faust's table routing asks a producer that has no metadata of the
    changelog yet), so the client's result polling starts once the state is there.
    """
    url = f"{stack[0].url}/agents/{agent_id}"
    await poll(lambda: http(url, token=token) == 200, timeout=60, what=f"GET {url} answering 200")


@pytest.fixture
async def secure_client(
    secure_broker: SecureBroker, secure_cluster: Cluster, secure_stack: tuple[ManagedProcess, ManagedProcess]
) -> AsyncIterator[AgentClient]:
    settings = secure_broker.settings(secure_cluster, api_url=secure_stack[0].url)
    async with AgentClient(settings) as client:
        yield client


@pytest.mark.apache
async def test_the_whole_stack_runs_through_the_sasl_ssl_listener(
    secure_client: AgentClient, secure_broker: SecureBroker, secure_stack: tuple[ManagedProcess, ManagedProcess]
) -> None:
    await secure_client.schedule_agent("Greeter", "greeter-tls", "grace")  # the client's producer
    await readable(secure_stack, secure_broker.token, "greeter-tls")
    assert await secure_client.get_agent_result("greeter-tls", timeout=60) == "hello grace"  # a step on the worker

    async def first_completed() -> AgentStatus:  # the client's agent_updates consumer
        async for update in secure_client.agent_updates("greeter-tls"):
            if update.status == AgentStatus.COMPLETED:
                return update.status
        raise AssertionError("agent-updates ended")

    assert await first_completed() == AgentStatus.COMPLETED
    assert [item async for item in secure_client.stream("greeter-tls", follow=False)] == []  # the stream reader
    processor_url = secure_stack[0].url
    assert http(f"{processor_url}/agents/greeter-tls/stream?follow=false", token=secure_broker.token) == 200  # SSE
    assert http(f"{processor_url}/agents/greeter-tls") == 401


@pytest.mark.apache
async def test_a_client_with_a_wrong_password_fails_at_once_naming_the_setting(
    secure_broker: SecureBroker, secure_cluster: Cluster
) -> None:
    wrong = secure_broker.settings(secure_cluster, kafka_sasl_password="not-" + secure_broker.password)
    started = time.monotonic()
    async with AgentClient(wrong) as client:
        with pytest.raises(BrokerUnavailableError) as refused:
            await client.schedule_agent("Greeter", "never", "x")
    assert time.monotonic() - started < FAIL_FAST_S
    assert str(refused.value).startswith(
        f"SASL authentication failed for user '{SCRAM_USER}' with {MECHANISM} at {secure_broker.bootstrap}: "
        "check AGENTSTREAM_KAFKA_SASL_PASSWORD")

    plaintext_port = secure_broker.cluster.bootstrap  # TLS spoken to the plaintext listener
    astray = secure_broker.settings(secure_cluster, kafka_bootstrap=plaintext_port)
    started = time.monotonic()
    async with AgentClient(astray) as client:
        with pytest.raises(BrokerUnavailableError, match="is it a SASL_SSL listener\\? check "
                           "AGENTSTREAM_KAFKA_SECURITY_PROTOCOL and the port in AGENTSTREAM_KAFKA_BOOTSTRAP"):
            await client.schedule_agent("Greeter", "never", "x")
    assert time.monotonic() - started < FAIL_FAST_S


@pytest.mark.apache
def test_a_processor_and_a_worker_with_a_wrong_password_exit_at_once_naming_the_setting(
    secure_broker: SecureBroker, secure_cluster: Cluster
) -> None:
    env = secure_broker.env(kafka_sasl_password="wrong-" + uuid.uuid4().hex)
    processes = [secure_cluster.processor("processor-wrong-password", app="shapes", env=env).start(),
                 secure_cluster.worker("worker-wrong-password", app="shapes", env=env).start()]
    for process in processes:
        assert process.process is not None
        code = process.process.wait(timeout=60)  # a hang would time out here: it must exit by itself
        log = process.log_path.read_text()
        assert code == 1, log
        assert f"SASL authentication failed for user '{SCRAM_USER}' with {MECHANISM}" in log, log
        assert "check AGENTSTREAM_KAFKA_SASL_PASSWORD" in log and "Traceback" not in log, log


@pytest.mark.apache
async def test_debug_logs_of_processor_and_worker_never_show_a_secret(
    secure_client: AgentClient, secure_broker: SecureBroker, secure_stack: tuple[ManagedProcess, ManagedProcess]
) -> None:
    # Runs last: it stops the stack, so that shutdown logs are searched too.
    marker = "visible-" + uuid.uuid4().hex
    name = f"{marker} token={secure_broker.token} password={secure_broker.password}"
    await secure_client.schedule_agent("Greeter", "greeter-secret", name)
    await readable(secure_stack, secure_broker.token, "greeter-secret")
    assert await secure_client.get_agent_result("greeter-secret", timeout=60) == f"hello {name}"
    for process in secure_stack:
        process.stop()
    secrets = [secure_broker.token, secure_broker.password, secure_broker.certs.key_password]
    for process in secure_stack:
        log = process.log_path.read_text(errors="replace")
        assert '"level": "debug"' in log, f"{process.name} did not log at DEBUG"
        assert marker in log, f"{process.name}'s DEBUG log does not show the step's input: nothing to redact"
        for secret in secrets:
            assert secret not in log, f"{process.name}'s log shows a secret"
        assert "[redacted]" in log
