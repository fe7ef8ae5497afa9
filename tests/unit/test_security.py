"""Security settings in isolation: Kafka client options, Faust credentials, the log filter, the API's bearer guard.

The same settings against a real SASL_SSL broker: tests/integration/test_security.py.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import ssl
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from agentstream.streams import logs
from agentstream.streams.logs import REDACTED, JsonFormatter, SecretFilter, logging_config, register_secrets
from agentstream.streams.processor import auth
from agentstream.streams.processor.auth import OPEN_PATHS, authorized, bearer_guard
from agentstream.streams.security import (
    bearer_headers,
    explain_failure,
    faust_credentials,
    kafka_options,
    secret_values,
)
from agentstream.streams.settings import Settings
from agentstream.topics import ConfigurationError
from tls import Certificates, make_certificates, openssl_missing

KEY_PASSWORD = "key-pw-" + uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    if (missing := openssl_missing()) is not None:
        pytest.skip(missing)
    return make_certificates(tmp_path_factory.mktemp("certs"), KEY_PASSWORD)


def sasl_ssl(certs: Certificates, **changes: Any) -> Settings:
    values: dict[str, Any] = {
        "kafka_security_protocol": "SASL_SSL", "kafka_ssl_cafile": certs.ca, "kafka_ssl_certfile": certs.client_cert,
        "kafka_ssl_keyfile": certs.client_key, "kafka_ssl_key_password": certs.key_password,
        "kafka_sasl_mechanism": "SCRAM-SHA-256", "kafka_sasl_username": "alice", "kafka_sasl_password": "pw-1",
    }
    return Settings(**{**values, **changes})


# --- Kafka client options and Faust credentials --------------------------------------------


def test_plaintext_settings_give_plaintext_options_and_no_faust_credentials() -> None:
    settings = Settings()
    assert kafka_options(settings) == {"security_protocol": "PLAINTEXT"}
    assert faust_credentials(settings) is None


def test_sasl_ssl_settings_give_a_verifying_tls_context_and_the_sasl_options(certs: Certificates) -> None:
    options = kafka_options(sasl_ssl(certs))
    context = options.pop("ssl_context")
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert options == {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-256",
                       "sasl_plain_username": "alice", "sasl_plain_password": "pw-1"}


def test_faust_credentials_give_faust_the_same_options_as_every_other_client(certs: Certificates) -> None:
    settings = sasl_ssl(certs, kafka_sasl_mechanism="SCRAM-SHA-512")
    faust_side = dict(credentials_to_aiokafka_auth(faust_credentials(settings)))
    ours = kafka_options(settings)
    assert isinstance(faust_side.pop("ssl_context"), ssl.SSLContext)
    ours.pop("ssl_context")
    assert faust_side == ours

    tls_only = Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=certs.ca)
    assert credentials_to_aiokafka_auth(faust_credentials(tls_only))["security_protocol"] == "SSL"
    sasl_only = Settings(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_username="bob", kafka_sasl_password="pw")
    assert dict(credentials_to_aiokafka_auth(faust_credentials(sasl_only))) == {**kafka_options(sasl_only),
                                                                               "ssl_context": None}


@pytest.mark.parametrize("missing", ["kafka_sasl_username", "kafka_sasl_password"])
def test_sasl_without_username_or_password_is_refused_naming_both_settings(certs: Certificates, missing: str) -> None:
    with pytest.raises(ConfigurationError, match="AGENTSTREAM_KAFKA_SASL_USERNAME and AGENTSTREAM_KAFKA_SASL_PASSWORD"):
        kafka_options(sasl_ssl(certs, **{missing: None}))


def test_a_missing_ca_file_is_refused_naming_its_setting(certs: Certificates, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="AGENTSTREAM_KAFKA_SSL_CAFILE=.*no such file"):
        kafka_options(sasl_ssl(certs, kafka_ssl_cafile=tmp_path / "absent.pem"))


def test_a_wrong_key_password_is_refused_naming_its_setting(certs: Certificates) -> None:
    with pytest.raises(ConfigurationError, match="AGENTSTREAM_KAFKA_SSL_KEY_PASSWORD"):
        kafka_options(sasl_ssl(certs, kafka_ssl_key_password="not-the-password"))


def test_settings_never_print_their_secrets(certs: Certificates) -> None:
    settings = sasl_ssl(certs, api_token="tok-123456")
    shown = f"{settings} {settings!r} {settings.model_dump()}"
    assert "pw-1" not in shown and KEY_PASSWORD not in shown and "tok-123456" not in shown
    assert sorted(secret_values(settings)) == sorted(["pw-1", KEY_PASSWORD, "tok-123456"])
    assert bearer_headers(settings) == {"Authorization": "Bearer tok-123456"}
    assert bearer_headers(Settings()) == {}


def test_an_invalid_setting_is_reported_without_showing_the_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    # A validator of the whole Settings sees every input; pydantic would print them all in its error.
    for secret in ("kafka_sasl_password", "kafka_ssl_key_password", "api_token"):
        monkeypatch.setenv(f"AGENTSTREAM_{secret.upper()}", "pw-7")
        monkeypatch.setenv("AGENTSTREAM_MIN_INSYNC_REPLICAS", "3")  # more than the replication factor: refused
        with pytest.raises(ValueError) as refused:
            Settings()
        assert "min_insync_replicas" in str(refused.value)
        assert "pw-7" not in str(refused.value), secret
        monkeypatch.delenv(f"AGENTSTREAM_{secret.upper()}")


async def test_a_listener_that_hangs_up_is_explained_by_the_security_protocol_setting() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        reason = await explain_failure(f"127.0.0.1:{port}", {"security_protocol": "PLAINTEXT"})
    finally:
        server.close()
        await server.wait_closed()
    assert reason is not None and "AGENTSTREAM_KAFKA_SECURITY_PROTOCOL (now PLAINTEXT)" in reason


async def test_an_unreachable_broker_is_not_blamed_on_security() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()  # nothing listens on the port any more: connection refused
    assert await explain_failure(f"127.0.0.1:{port}", {"security_protocol": "SASL_SSL"}) is None


# --- the log filter ---------------------------------------------------------------------------


@pytest.fixture
def secret() -> str:
    value = "s3cr3t-" + uuid.uuid4().hex
    register_secrets([value])
    return value


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger whose one handler is set up as logging_config() sets up the processes' handler."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(SecretFilter())
    logger = logging.getLogger(f"test.secrets.{uuid.uuid4().hex}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    yield logger, stream
    logger.removeHandler(handler)


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_the_processes_log_handler_carries_the_secret_filter() -> None:
    config = logging_config("json", "DEBUG")
    assert config["handlers"]["stderr"]["filters"] == ["secrets"]
    assert config["filters"]["secrets"]["()"] is SecretFilter
    assert config["root"]["handlers"] == ["stderr"]  # the one handler every record reaches


def test_a_secret_is_redacted_from_messages_arguments_extras_and_tracebacks(
    captured: tuple[logging.Logger, io.StringIO], secret: str
) -> None:
    logger, stream = captured
    logger.debug(f"configured with password={secret}")
    logger.debug("send: value=%r", json.dumps({"input": f"x {secret} y"}).encode())
    logger.info("step input", extra={"payload": {"nested": [secret, 1]}, "raw": secret.encode(), "n": 3})
    try:
        raise ValueError(f"bad token {secret}")
    except ValueError:
        logger.exception("failed")
    text = stream.getvalue()
    assert secret not in text
    entries = lines(stream)
    assert entries[0]["msg"] == f"configured with password={REDACTED}"
    assert REDACTED in entries[1]["msg"] and entries[1]["msg"].startswith("send: value=b'")
    assert entries[2]["payload"] == {"nested": [REDACTED, 1]} and entries[2]["raw"] == REDACTED and entries[2]["n"] == 3
    assert f"bad token {REDACTED}" in entries[3]["exc"]


def test_escaped_spellings_of_a_secret_are_redacted_too(captured: tuple[logging.Logger, io.StringIO]) -> None:
    tricky = 'p"w\\d-' + uuid.uuid4().hex  # a quote and a backslash: JSON and repr escape them
    register_secrets([tricky])
    logger, stream = captured
    logger.debug("json %s repr %r bytes %r", json.dumps({"p": tricky}), tricky, tricky.encode())
    rendered = stream.getvalue()
    for spelling in (tricky, json.dumps(tricky)[1:-1], repr(tricky)[1:-1], repr(tricky.encode())[2:-1]):
        assert spelling not in rendered
    assert lines(stream)[0]["msg"].count(REDACTED) == 3


def test_records_without_a_secret_keep_their_message_and_arguments(
    captured: tuple[logging.Logger, io.StringIO], secret: str
) -> None:
    logger, stream = captured
    record = logger.makeRecord(logger.name, logging.DEBUG, __file__, 1, "fetched %d records from %s", (3, "p-1"), None)
    assert SecretFilter().filter(record)
    assert (record.msg, record.args) == ("fetched %d records from %s", (3, "p-1"))
    logger.debug("fetched %d records from %s", 3, "p-1")
    assert lines(stream)[0]["msg"] == "fetched 3 records from p-1"


def test_the_filter_does_nothing_until_a_secret_is_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs, "_needles", ())
    record = logging.LogRecord("x", logging.DEBUG, __file__, 1, "value %s", ("anything",), None)
    assert SecretFilter().filter(record) and record.args == ("anything",)


# --- the HTTP API's bearer guard -------------------------------------------------------------

TOKEN = "api-" + uuid.uuid4().hex


@pytest.fixture
async def guarded() -> AsyncIterator[TestClient[web.Request, web.Application]]:
    """An aiohttp app with the guard and the kinds of routes a processor has."""

    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"path": request.path})

    app = web.Application(middlewares=[bearer_guard(TOKEN)])
    for path in (*OPEN_PATHS, "/agents/{agent_id}", "/agent-types", "/agents/{agent_id}/stream", "/router",
                 "/table/{name}/{key}/", "/"):
        app.router.add_get(path, ok)
    app.router.add_post("/agents/{agent_id}", ok)
    client = TestClient(TestServer(app))
    await client.start_server()
    yield client
    await client.close()


PROTECTED = ["/agents/a-1", "/agent-types", "/agents/a-1/stream", "/router", "/table/agents/a-1/", "/",
             "/health/", "/metrics/../agents/a-1"]


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
                                     {"Authorization": TOKEN}, {"Authorization": f"Bearer {TOKEN}x"}])
async def test_every_page_but_the_probes_answers_401_without_the_token(
    guarded: TestClient[web.Request, web.Application], headers: dict[str, str]
) -> None:
    for path in PROTECTED:
        response = await guarded.get(path, headers=headers)
        assert response.status == 401, path
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert (await response.json())["error"] == "unauthorized"
    assert (await guarded.post("/agents/a-1", headers=headers, json={})).status == 401


async def test_the_token_opens_every_page_and_the_probes_need_none(
    guarded: TestClient[web.Request, web.Application]
) -> None:
    for path in PROTECTED[:6]:
        for scheme in ("Bearer", "bearer"):
            assert (await guarded.get(path, headers={"Authorization": f"{scheme} {TOKEN}"})).status == 200, path
    for path in OPEN_PATHS:
        assert (await guarded.get(path)).status == 200, path


def test_the_token_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return a == b

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    assert authorized(f"Bearer {TOKEN}", TOKEN) and not authorized("Bearer nope", TOKEN)
    assert compared == [(TOKEN.encode(), TOKEN.encode()), (b"nope", TOKEN.encode())]


def test_an_empty_token_is_refused() -> None:
    with pytest.raises(ValueError):
        bearer_guard("")
