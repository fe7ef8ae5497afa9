"""How agentstream's Kafka clients authenticate: TLS and SASL settings turned into client options.

Every Kafka client agentstream creates (the processor's Faust app, the worker, `AgentClient`,
admin clients, the CLI) gets its security from the two functions here, so one set of
`AGENTSTREAM_KAFKA_*` settings covers them all:

- `kafka_options(settings)`: keyword arguments for aiokafka's producer, consumer and admin
  client (`security_protocol`, an `ssl.SSLContext`, `sasl_*`);
- `faust_credentials(settings)`: the same as Faust's `broker_credentials`.

When a client cannot start, `explain_failure` connects once more by hand to tell *why*
(aiokafka only says "Unable to bootstrap"), so a wrong password or a TLS mismatch fails
at once with the setting to fix, instead of a bare connection error.

`secret_values(settings)` lists what the log filter (logs.py) must never let through.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from agentstream.topics import ConfigurationError

from .settings import Settings

if TYPE_CHECKING:
    from faust.types.auth import CredentialsT

KafkaSecurity = Mapping[str, Any]  # keyword arguments for aiokafka clients: security_protocol, ssl_context, sasl_*

PROBE_TIMEOUT_S = 10.0
# Keyword arguments of aiokafka's create_conn among those kafka_options() returns.
_CONNECTION_KEYS = ("security_protocol", "ssl_context", "sasl_mechanism", "sasl_plain_username", "sasl_plain_password")


def env_name(field: str) -> str:
    """The variable that sets a `Settings` field, as error messages name it."""
    return f"AGENTSTREAM_{field.upper()}"


def uses_tls(settings: Settings) -> bool:
    return settings.kafka_security_protocol in ("SSL", "SASL_SSL")


def uses_sasl(settings: Settings) -> bool:
    return settings.kafka_security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")


def ssl_context(settings: Settings) -> ssl.SSLContext:
    """The TLS context of every client: the CA to trust, and the client's certificate if any.

    Refuses unreadable files here, naming the setting, rather than at the first connection.
    """
    from aiokafka.helpers import create_ssl_context

    for field in ("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile"):
        path = getattr(settings, field)
        if path is not None and not path.is_file():
            raise ConfigurationError(f"{env_name(field)}={path}: no such file")
    if (settings.kafka_ssl_certfile is None) != (settings.kafka_ssl_keyfile is None):
        raise ConfigurationError(
            f"a client certificate needs both {env_name('kafka_ssl_certfile')} and {env_name('kafka_ssl_keyfile')}"
        )
    password = settings.kafka_ssl_key_password
    try:
        context: ssl.SSLContext = create_ssl_context(
            cafile=settings.kafka_ssl_cafile,
            certfile=settings.kafka_ssl_certfile,
            keyfile=settings.kafka_ssl_keyfile,
            password=None if password is None else password.get_secret_value(),
        )
    except ssl.SSLError as exc:
        raise ConfigurationError(
            f"cannot load the TLS files ({exc.reason or exc}): check {env_name('kafka_ssl_cafile')}, "
            f"{env_name('kafka_ssl_certfile')}, {env_name('kafka_ssl_keyfile')} and "
            f"{env_name('kafka_ssl_key_password')} (the key's password, if it is encrypted)"
        ) from exc
    return context


def kafka_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for `AIOKafkaProducer`, `AIOKafkaConsumer` and `AIOKafkaAdminClient`."""
    options: dict[str, Any] = {"security_protocol": settings.kafka_security_protocol}
    if uses_tls(settings):
        options["ssl_context"] = ssl_context(settings)
    if uses_sasl(settings):
        username, password = sasl_credentials(settings)
        options.update(sasl_mechanism=settings.kafka_sasl_mechanism, sasl_plain_username=username,
                       sasl_plain_password=password)
    return options


def sasl_credentials(settings: Settings) -> tuple[str, str]:
    """(username, password), or a refusal naming what is missing.

    Checked here rather than by a validator of `Settings`: pydantic's error would show
    every input, the password among them.
    """
    password = settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else ""
    if not settings.kafka_sasl_username or not password:
        raise ConfigurationError(
            f"{env_name('kafka_security_protocol')}={settings.kafka_security_protocol} needs "
            f"{env_name('kafka_sasl_username')} and {env_name('kafka_sasl_password')}"
        )
    return settings.kafka_sasl_username, password


def faust_credentials(settings: Settings) -> CredentialsT | None:
    """The same security as Faust's `broker_credentials` (None: plaintext)."""
    import faust

    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    context = ssl_context(settings) if uses_tls(settings) else None
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    username, password = sasl_credentials(settings)
    return faust.SASLCredentials(
        username=username,
        password=password,
        mechanism=settings.kafka_sasl_mechanism,
        ssl_context=context,  # with a context Faust speaks SASL_SSL, without SASL_PLAINTEXT
    )


def secret_values(settings: Settings) -> list[str]:
    """The secrets in `settings` (SASL password, key password, API token): never to be logged."""
    secrets = (settings.kafka_sasl_password, settings.kafka_ssl_key_password, settings.api_token)
    return [s.get_secret_value() for s in secrets if s is not None and s.get_secret_value()]


def bearer_headers(settings: Settings) -> dict[str, str]:
    """The `Authorization` header for a processor's HTTP API (none without `AGENTSTREAM_API_TOKEN`)."""
    token = settings.api_token
    return {} if token is None else {"Authorization": f"Bearer {token.get_secret_value()}"}


def _hosts(bootstrap: str) -> list[tuple[str, int]]:
    hosts = []
    for entry in bootstrap.split(","):
        host, _, port = entry.strip().rpartition(":")
        if host and port.isdigit():
            hosts.append((host.strip("[]"), int(port)))
    return hosts


async def explain_failure(bootstrap: str, options: KafkaSecurity) -> str | None:
    """Why no client could start on `bootstrap` with `options`, naming the setting to fix.

    Connects to each bootstrap host by hand (aiokafka's clients swallow the cause) and
    asks for metadata. None when nothing security-related shows: the broker is simply
    unreachable, or answers now.
    """
    for host, port in _hosts(bootstrap):
        reason = await _probe(host, port, options)
        if reason is not None:
            return reason
    return None


async def _probe(host: str, port: int, options: KafkaSecurity) -> str | None:
    from aiokafka.conn import create_conn
    from aiokafka.errors import (
        IllegalSaslStateError,
        KafkaConnectionError,
        SaslAuthenticationFailed,
        UnsupportedSaslMechanismError,
    )
    from aiokafka.protocol.metadata import MetadataRequest

    where = f"{host}:{port}"
    protocol = str(options.get("security_protocol", "PLAINTEXT"))
    user, mechanism = options.get("sasl_plain_username"), options.get("sasl_mechanism")
    connection = {key: options[key] for key in _CONNECTION_KEYS if key in options}
    try:
        conn = await asyncio.wait_for(
            create_conn(host, port, request_timeout_ms=int(PROBE_TIMEOUT_S * 1000), **connection), PROBE_TIMEOUT_S
        )
        try:
            await asyncio.wait_for(conn.send(MetadataRequest([])), PROBE_TIMEOUT_S)
        finally:
            conn.close()
    except SaslAuthenticationFailed:
        return (f"SASL authentication failed for user {user!r} with {mechanism} at {where}: check "
                f"{env_name('kafka_sasl_password')} (and {env_name('kafka_sasl_username')})")
    except UnsupportedSaslMechanismError:
        return (f"the broker at {where} does not enable SASL mechanism {mechanism} on this listener: check "
                f"{env_name('kafka_sasl_mechanism')}")
    except IllegalSaslStateError:
        return (f"the listener at {where} does not expect SASL: check {env_name('kafka_security_protocol')} "
                f"(now {protocol})")
    except ssl.SSLCertVerificationError as exc:
        return (f"the TLS certificate of the broker at {where} was not accepted ({exc.verify_message}): check "
                f"{env_name('kafka_ssl_cafile')} (the CA that signed the broker's certificate, which must name "
                f"{host})")
    except ssl.SSLError as exc:
        return (f"the TLS handshake with {where} failed ({exc.reason or exc}): is it a TLS listener? check "
                f"{env_name('kafka_security_protocol')} (now {protocol}) and the port in "
                f"{env_name('kafka_bootstrap')}")
    except (KafkaConnectionError, ConnectionResetError) as exc:
        if protocol in ("SSL", "SASL_SSL"):
            return (f"the broker at {where} closed the connection during or right after the TLS handshake ({exc!r}): "
                    f"is it a {protocol} listener? check {env_name('kafka_security_protocol')} and the port in "
                    f"{env_name('kafka_bootstrap')}; a listener that requires client certificates also needs "
                    f"{env_name('kafka_ssl_certfile')} and {env_name('kafka_ssl_keyfile')}")
        return (f"the broker at {where} closed the connection at the first request ({exc!r}): if that listener "
                f"uses TLS or SASL, set {env_name('kafka_security_protocol')} (now {protocol})")
    except Exception:  # unreachable (refused, timed out), or a failure unrelated to security
        return None
    return None
