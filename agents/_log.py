"""`log`: the agent author's logger, accepting extra values the way Restack's does."""

from __future__ import annotations

import logging
from typing import Any


class AgentLogger:
    """`log.info("message", value, key=value)`: positional values and keywords become fields."""

    def __init__(self, name: str = "agentstream.agent") -> None:
        self._logger = logging.getLogger(name)

    def _log(self, level: int, message: str, args: tuple[Any, ...], fields: dict[str, Any]) -> None:
        if not self._logger.isEnabledFor(level):
            return
        extra: dict[str, Any] = {"fields": fields} if fields else {}
        if args:
            extra["values"] = [repr(a) for a in args]
        self._logger.log(level, message, extra=extra, stacklevel=3)

    def debug(self, message: str, *args: Any, **fields: Any) -> None:
        self._log(logging.DEBUG, message, args, fields)

    def info(self, message: str, *args: Any, **fields: Any) -> None:
        self._log(logging.INFO, message, args, fields)

    def warning(self, message: str, *args: Any, **fields: Any) -> None:
        self._log(logging.WARNING, message, args, fields)

    def error(self, message: str, *args: Any, **fields: Any) -> None:
        self._log(logging.ERROR, message, args, fields)

    def critical(self, message: str, *args: Any, **fields: Any) -> None:
        self._log(logging.CRITICAL, message, args, fields)


log = AgentLogger()
