"""Structured logging: one JSON object per line (or plain text for humans), secrets redacted.

Faust and aiokafka log produced values and their configuration at DEBUG, and an agent's
input may hold anything; so the one handler every record goes through carries
`SecretFilter`, which replaces each known secret (the SASL password, the TLS key's
password, the API token: `register_secrets`) wherever it appears — the message, its
arguments, `extra` fields, a traceback — by `REDACTED`, and leaves everything else as it was.
"""

from __future__ import annotations

import json
import logging
import logging.config
import threading
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

_STANDARD = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}
REDACTED = "[redacted]"

_lock = threading.Lock()
_needles: tuple[str, ...] = ()  # every secret as it may be written: plain, JSON/repr-escaped, URL-quoted


def _spellings(secret: str) -> set[str]:
    """The ways `secret` shows up in a rendered message: as is, inside a JSON or repr string, in bytes' repr, in a URL."""
    return {
        secret,
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        repr(secret)[1:-1],
        repr(secret.encode())[2:-1],
        quote(secret, safe=""),
    } - {""}


def register_secrets(secrets: Iterable[str]) -> None:
    """Add values no log line of this process may show (empty ones are ignored)."""
    global _needles
    with _lock:
        known = set(_needles)
        for secret in secrets:
            if secret:
                known |= _spellings(secret)
        _needles = tuple(sorted(known, key=len, reverse=True))  # longest first: no partial leftovers


def redact(text: str) -> str:
    for needle in _needles:
        if needle in text:
            text = text.replace(needle, REDACTED)
    return text


def _scrub(value: Any) -> Any:
    """`value` with secrets redacted in every string it holds; the same object when it holds none."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, (bytes, bytearray)):
        text = bytes(value).decode("utf-8", "backslashreplace")
        cleaned = redact(text)
        return value if cleaned == text else cleaned
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, dict):
        cleaned_dict = {_scrub(k): _scrub(v) for k, v in value.items()}
        return value if cleaned_dict == value else cleaned_dict
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [_scrub(v) for v in value]
        return value if items == list(value) else items
    rendered = str(value)
    cleaned = redact(rendered)
    return value if cleaned == rendered else cleaned


class SecretFilter(logging.Filter):
    """Redacts registered secrets from a record before any handler renders it; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _needles:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a broken format: the handler reports it; the raw parts are still scrubbed
            record.msg, record.args = _scrub(record.msg), _scrub(record.args) if record.args else record.args
        else:
            cleaned = redact(message)
            if cleaned != message:
                record.msg, record.args = cleaned, None
        for key, value in list(vars(record).items()):
            if key not in _STANDARD:
                setattr(record, key, _scrub(value))
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


class JsonFormatter(logging.Formatter):
    """Renders a record and any `extra={...}` fields as one JSON line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_text:  # as SecretFilter left it
            entry["exc"] = record.exc_text
        elif record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def logging_config(fmt: str = "json", level: str = "INFO", secrets: Iterable[str] = ()) -> dict[str, Any]:
    """A `logging.config.dictConfig` mapping; also handed to Faust so its logs match ours.

    Its one handler redacts `secrets` (and any registered before): the values themselves
    stay out of the mapping, which Faust keeps in its configuration.
    """
    register_secrets(secrets)
    debug = level.upper() == "DEBUG"
    formatter: dict[str, Any] = (
        {"()": JsonFormatter}
        if fmt == "json"
        else {"format": "%(asctime)s %(levelname)-7s %(name)s: %(message)s"}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "filters": {"secrets": {"()": SecretFilter}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "default", "stream": "ext://sys.stderr",
                                "filters": ["secrets"]}},
        "root": {"handlers": ["stderr"], "level": level.upper()},
        "loggers": {
            # aiokafka logs every failed connection attempt while a broker starts up (shown at DEBUG only)
            "aiokafka": {"level": "DEBUG" if debug else "WARNING"},
            "faust": {"level": "WARNING" if level.upper() == "INFO" else level.upper()},
            "mode": {"level": "WARNING"},
        },
    }


def configure_logging(fmt: str = "json", level: str = "INFO", secrets: Iterable[str] = ()) -> None:
    logging.config.dictConfig(logging_config(fmt, level, secrets))
