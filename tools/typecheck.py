"""Type-check the `agentstream` package with `mypy --strict`.

The package is mapped from three top-level folders (setup.py), which mypy cannot follow
through the editable install's import hook; so this lays the package out as symlinks in
a temporary folder and checks it there. Usage: `python tools/typecheck.py` (exit code of mypy).
`MYPY_CACHE_DIR` picks the cache folder (CI runs two suites side by side, each with its own).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("streams", "agents", "topics")


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="agentstream-mypy-") as tmp:
        package = Path(tmp) / "agentstream"
        package.mkdir()
        for folder in FOLDERS:
            (package / folder).symlink_to(ROOT / folder, target_is_directory=True)
        command = [
            sys.executable, "-m", "mypy", "--strict", "--namespace-packages", "--explicit-package-bases",
            "--config-file", str(ROOT / "pyproject.toml"), "--cache-dir", os.environ.get("MYPY_CACHE_DIR") or str(ROOT / ".mypy_cache"),
            "-p", "agentstream",
        ]
        return subprocess.run(command, cwd=tmp, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
