"""`log`: the agent author's logger, accepting extra values the way Restack's does.

Inside an agent it tags records with the agent and run IDs, and stays silent while
the engine replays code that already ran (so each line is logged once).
"""

from __future__ import annotations

import logging
from typing import Any

from ._context import optional_runtime


class AgentLogger:
    """`log.info("message", value, key=value)`: positional values and keywords become fields."""

    def __init__(self, name: str = "agentstream.agent") -> None:
        self._logger = logging.getLogger(name)

    def _log(self, level: int, message: str, args: tuple[Any, ...], fields: dict[str, Any]) -> None:
        if not self._logger.isEnabledFor(level):
            return
        runtime = optional_runtime()
        if runtime is not None and runtime.is_replaying():
            return  # it was logged when the code first ran
        extra: dict[str, Any] = dict(runtime.log_context()) if runtime is not None else {}
        if fields:
            extra["fields"] = fields
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
