"""Writes prometheusrule.yaml from deploy/prometheus/rules.yml: the same rules, as the Prometheus
Operator's PrometheusRule. Run it after changing rules.yml (tests/unit/test_deploy.py checks)."""

from __future__ import annotations

from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
RULES = HERE.parents[1] / "prometheus" / "rules.yml"
TARGET = HERE / "prometheusrule.yaml"
HEAD = ("# deploy/prometheus/rules.yml for the Prometheus Operator (generated from it; tests/unit/test_deploy.py\n"
        "# fails when the two differ: change rules.yml, then run `python deploy/kubernetes/monitoring/sync.py`).\n")


def rendered() -> str:
    document = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "agentstream", "labels": {"app.kubernetes.io/name": "agentstream",
                                                       "app.kubernetes.io/part-of": "agentstream"}},
        "spec": yaml.safe_load(RULES.read_text(encoding="utf-8")),
    }
    return HEAD + yaml.safe_dump(document, sort_keys=False, width=110)


if __name__ == "__main__":
    TARGET.write_text(rendered(), encoding="utf-8")
