"""The package stays `mypy --strict` clean (tools/typecheck.py lays it out for mypy)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TOOL = Path(__file__).parents[1] / "tools" / "typecheck.py"


def test_the_package_is_mypy_strict_clean() -> None:
    result = subprocess.run([sys.executable, str(TOOL)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "Success: no issues found" in result.stdout
