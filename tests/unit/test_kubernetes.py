"""The Kubernetes manifests as users apply them: the kustomize base built by the real kustomize
and validated offline by kubernetes-validate --strict; pods never run as root; the `images:`
entry reaches every container; the Operator's PrometheusRule carries rules.yml; the Dockerfile
builds the user the manifests run as.

kustomize comes from the Go module proxy (built once into ~/.cache/agentstream; `go` is on
this machine kind); `.ci/run` sets AGENTSTREAM_REQUIRE_KUSTOMIZE=1, so there it fails instead
of skipping.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BASE = REPO / "deploy" / "kubernetes"
KUSTOMIZE = "sigs.k8s.io/kustomize/kustomize/v5@v5.7.1"
CACHE = Path.home() / ".cache" / "agentstream" / "kustomize-v5.7.1"
VALIDATE = Path(sys.executable).parent / "kubernetes-validate"
USER_ID = 10001  # the Dockerfile's user


@pytest.fixture(scope="module")
def kustomize() -> Path:
    found = shutil.which("kustomize") or (str(CACHE / "kustomize") if (CACHE / "kustomize").exists() else None)
    if found:
        return Path(found)
    if shutil.which("go") is None:
        if os.environ.get("AGENTSTREAM_REQUIRE_KUSTOMIZE") == "1":
            pytest.fail("kustomize is required here: it is built with `go install`, and go is missing")
        pytest.skip("needs kustomize, or go to build it")
    built = subprocess.run(["go", "install", KUSTOMIZE], env={**os.environ, "GOBIN": str(CACHE), "GOFLAGS": "-mod=mod"},
                           capture_output=True, text=True, timeout=900)
    assert built.returncode == 0, f"go install {KUSTOMIZE} failed:\n{built.stderr[-3000:]}"
    return CACHE / "kustomize"


def build(kustomize: Path, folder: Path) -> str:
    out = subprocess.run([str(kustomize), "build", str(folder)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(VALIDATE), "--strict", str(path)], capture_output=True, text=True, timeout=300)


def pod_specs(documents: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    specs = {}
    for doc in documents:
        spec = doc.get("spec", {})
        template = spec.get("template") or spec.get("jobTemplate", {}).get("spec", {}).get("template")
        if template:
            specs[f"{doc['kind']}/{doc['metadata']['name']}"] = template["spec"]
    return specs


def test_the_kustomize_base_passes_kubernetes_validate_strict(kustomize: Path, tmp_path: Path) -> None:
    rendered = tmp_path / "base.yaml"
    rendered.write_text(build(kustomize, BASE), encoding="utf-8")
    checked = validate(rendered)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    kinds = sorted(d["kind"] for d in yaml.safe_load_all(rendered.read_text()) if d)
    assert checked.stdout.count(" passed for resource ") == len(kinds) == 8, checked.stdout
    example = validate(BASE / "examples" / "networkpolicy.yaml")
    assert example.returncode == 0 and example.stdout.count(" passed ") == 2, example.stdout + example.stderr


def test_the_validator_rejects_what_kubernetes_would(kustomize: Path, tmp_path: Path) -> None:
    """Not a validator that passes anything: a typo'd field and a wrong type in the base fail."""
    broken = build(kustomize, BASE).replace("runAsNonRoot: true", "runAsNonRoot: \"yes\"", 1)
    broken = broken.replace("readinessProbe:", "readinesProbe:", 1)
    (tmp_path / "broken.yaml").write_text(broken, encoding="utf-8")
    checked = validate(tmp_path / "broken.yaml")
    assert checked.returncode != 0, checked.stdout
    assert "readinesProbe" in checked.stdout + checked.stderr


def test_every_pod_runs_as_the_images_non_root_user_without_privileges(kustomize: Path) -> None:
    specs = pod_specs(list(yaml.safe_load_all(build(kustomize, BASE))))
    assert set(specs) == {"Deployment/worker", "StatefulSet/processor", "Job/agentstream-topics"}
    for name, spec in specs.items():
        security = spec["securityContext"]
        assert (security["runAsNonRoot"], security["runAsUser"], security["runAsGroup"]) == (True, USER_ID, USER_ID), name
        assert security["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for container in spec["containers"]:
            own = container["securityContext"]
            assert own == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                           "capabilities": {"drop": ["ALL"]}}, name
            assert any(m["mountPath"] == "/tmp" for m in container["volumeMounts"]), f"{name}: no writable /tmp"


def test_the_images_entry_sets_every_containers_image(kustomize: Path, tmp_path: Path) -> None:
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        f"resources: [{os.path.relpath(BASE, overlay)}]\n"
        "images:\n  - {name: agentstream, newName: registry.example.com/myagents, newTag: '1.4.0'}\n",
        encoding="utf-8")
    images = {c["image"] for spec in pod_specs(list(yaml.safe_load_all(build(kustomize, overlay)))).values()
              for c in spec["containers"]}
    assert images == {"registry.example.com/myagents:1.4.0"}
    base_images = {c["image"] for spec in pod_specs(list(yaml.safe_load_all(build(kustomize, BASE)))).values()
                   for c in spec["containers"]}
    assert base_images == {"agentstream:latest"}


def test_the_operators_resources_carry_rules_yml_and_scrape_both_components(kustomize: Path) -> None:
    documents = {d["kind"]: d for d in yaml.safe_load_all(build(kustomize, BASE / "monitoring"))}
    rules = yaml.safe_load((REPO / "deploy" / "prometheus" / "rules.yml").read_text())
    assert documents["PrometheusRule"]["spec"] == rules
    sys.path.insert(0, str(BASE / "monitoring"))
    try:
        import sync
    finally:
        sys.path.pop(0)
    assert (BASE / "monitoring" / "prometheusrule.yaml").read_text() == sync.rendered(), "run monitoring/sync.py"
    selector = documents["PodMonitor"]["spec"]["selector"]["matchExpressions"]
    assert {"key": "app.kubernetes.io/component", "operator": "In", "values": ["processor", "worker"]} in selector
    assert documents["PodMonitor"]["spec"]["podMetricsEndpoints"] == [{"port": "http", "path": "/metrics",
                                                                       "interval": "15s"}]


def test_the_dockerfile_builds_a_non_root_image_without_the_development_broker() -> None:
    text = (REPO / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+)", text, flags=re.M)
    assert len(stages) >= 2, "multi-stage: wheels built in one stage, installed in a slim one"
    final = text[text.rindex("\nFROM "):]
    assert re.search(rf"^USER {USER_ID}:{USER_ID}$", final, flags=re.M), "the last stage runs as the manifests' user"
    assert f"--uid {USER_ID}" in final
    assert "[dev]" not in text and "[test]" not in text and "calfkit" not in text
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".venv", ".git", "tests", "bench"} <= set(ignored)
