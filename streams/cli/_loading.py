"""Import the user's module given as `--app`, which registers its agents and functions."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

import click

BUNDLED = "agentstream.agents"


def load_app(module: str | None, app_dir: str | None = None) -> ModuleType | None:
    """Import `module` from `app_dir` (default: the current folder), else from agentstream's bundled modules.

    So `--app examples.taskprocessor` finds `agentstream.agents.examples.taskprocessor`
    unless the current folder has its own `examples/taskprocessor.py`.
    """
    if not module:
        return None
    folder = str(Path(app_dir or ".").resolve())
    if not Path(folder).is_dir():
        raise click.ClickException(f"--app-dir {app_dir}: no such folder")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is None or not module.startswith(exc.name):
            raise click.ClickException(f"--app {module}: importing it failed: {exc}") from exc
        try:
            return importlib.import_module(f"{BUNDLED}.{module}")
        except ModuleNotFoundError:
            raise click.ClickException(
                f"--app {module}: no module {module!r} in {folder} (nor among agentstream's bundled "
                "examples). Run from the folder that contains it, or pass --app-dir."
            ) from None
    except Exception as exc:
        raise click.ClickException(f"--app {module}: importing it raised {type(exc).__name__}: {exc}") from exc
