"""Maps the three top-level folders onto one import package, `agentstream`.

pyproject.toml holds all metadata; this file only computes the package list,
which plain TOML cannot express for a mapped layout.
"""

from setuptools import find_packages, setup

ROOTS = ("streams", "agents", "topics")

setup(
    packages=[f"agentstream.{name}" for name in find_packages(include=[f"{r}*" for r in ROOTS])],
    package_dir={f"agentstream.{root}": root for root in ROOTS},
)
