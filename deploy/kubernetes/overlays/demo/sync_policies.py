"""Rewrite the demo overlay's configmap-policies.yaml from the repository's policies/ directory.

Run from the repository root: `python deploy/kubernetes/overlays/demo/sync_policies.py`. The
unit tests fail when the ConfigMap and policies/ differ. (kustomize's configMapGenerator cannot
read files outside the kustomization directory, hence a committed copy.)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
POLICIES = HERE.parents[3] / "policies"
TARGET = HERE / "configmap-policies.yaml"
# Policy tests (`authz test`) stay in the repository: the service never reads them.
TEST_SUFFIXES = ("_test.yaml", "_test.yml")
HEADER = """\
# THE DEMO ONLY: these policies trust the demo issuer whose private key is in the repository.
# Generated from policies/ by deploy/kubernetes/overlays/demo/sync_policies.py; edit policies/,
# then rerun it.
# Mounted as a directory: `kubectl apply` of a changed ConfigMap reaches the pods within about a
# minute (kubelet sync) and the service reloads it without a restart; a bad set is rejected and
# the last good one stays in force.
"""


class _Literal(str):
    pass


class _Dumper(yaml.SafeDumper):
    """Its own class, so the literal-block representer does not leak into yaml.SafeDumper."""


def _literal(dumper: yaml.SafeDumper, value: _Literal) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")


def render(policies: Path = POLICIES) -> str:
    data = {
        path.name: _Literal(path.read_text(encoding="utf-8"))
        for path in sorted(policies.iterdir())
        if path.is_file()
        and not path.name.startswith(".")
        and not path.name.endswith(TEST_SUFFIXES)
    }
    document = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "authz-policies", "labels": {"app.kubernetes.io/name": "authz"}},
        "data": data,
    }
    return HEADER + yaml.dump(document, Dumper=_Dumper, sort_keys=False, width=4096)


_Dumper.add_representer(_Literal, _literal)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help="only say whether the ConfigMap is up to date (exit 1 if not); write nothing",
    )
    args = parser.parse_args(argv)  # --help prints and exits here, before anything is written
    text = render()
    if args.check:
        current = TARGET.read_text(encoding="utf-8") if TARGET.exists() else ""
        print(f"{TARGET.name}: {'up to date' if current == text else 'out of date'}")
        return 0 if current == text else 1
    TARGET.write_text(text, encoding="utf-8")
    print(f"wrote {TARGET.name} from {POLICIES.name}/")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
