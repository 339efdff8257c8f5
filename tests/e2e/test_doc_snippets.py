"""Every Envoy config snippet in README.md and docs/ is complete and accepted by a real Envoy
(`envoy --mode validate`), as the generated configs are (issue 25.6).

A snippet is a fenced `yaml` block marked by the HTML comment line before it:
`<!-- envoy: bootstrap -->` (a whole bootstrap), `<!-- envoy: hcm -->` (fields of the
HttpConnectionManager, `http_filters` included) or `<!-- envoy: http_filter -->` (one entry of
`http_filters`). The last two are placed into the bootstrap `authz envoy-config` generates.
`<!-- envoy: sds -->` marks SDS files: they must be the ones the TLS overlay ships, which
tests/unit/test_kubernetes_tls_overlay.py runs through Envoy.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from authz.addresses import Address
from authz.envoy_bootstrap import BootstrapOptions, bootstrap
from authz.envoy_http import http_bootstrap
from tests.support.envoy import EnvoyError, validate

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
_BLOCK = re.compile(r"(?:<!-- envoy: (\w+)[^>]*-->\n)?```yaml\n(.*?)```", re.S)
# What makes a YAML block an Envoy config (policies, tests and Traefik's config have none).
_ENVOY = re.compile(r"type\.googleapis\.com/envoy|http_filters|typed_config|static_resources")


def yaml_blocks() -> list[tuple[str, int, str | None, str]]:
    """(file, line, kind or None, text) of every fenced yaml block."""
    found = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for match in _BLOCK.finditer(text):
            line = text.count("\n", 0, match.start(2))
            found.append((path.name, line, match.group(1), match.group(2)))
    return found


SNIPPETS = [
    (f"{f}:{line}", kind, text) for f, line, kind, text in yaml_blocks() if kind and kind != "sds"
]
SDS_FILES = [text for _, _, kind, text in yaml_blocks() if kind == "sds"]
OVERLAY = REPO / "deploy/kubernetes/overlays/tls/envoy-client.yaml"


def test_every_envoy_config_block_is_marked() -> None:
    unmarked = [
        f"{f}:{line}" for f, line, kind, text in yaml_blocks() if not kind and _ENVOY.search(text)
    ]
    assert not unmarked, f"mark these Envoy snippets (<!-- envoy: KIND -->): {unmarked}"
    assert {kind for _, kind, _ in SNIPPETS} >= {"hcm", "http_filter"}


def test_the_sds_files_are_the_overlays() -> None:
    """docs/operations.md's SDS files are the ConfigMap the TLS overlay ships (validated there)."""
    (text,) = SDS_FILES
    documented = [doc for doc in yaml.safe_load_all(text)]
    (configmap,) = [
        doc for doc in yaml.safe_load_all(OVERLAY.read_text()) if doc.get("kind") == "ConfigMap"
    ]
    shipped = [yaml.safe_load(data) for _, data in sorted(configmap["data"].items())]
    assert sorted(documented, key=str) == sorted(shipped, key=str)


def _options() -> BootstrapOptions:
    return BootstrapOptions(
        authz=(Address("127.0.0.1", 9191),),
        upstream=Address("127.0.0.1", 8000),
        listen_address="127.0.0.1",
        listen_port=10000,
        admin_port=9901,
    )


def _hcm(config: dict[str, Any]) -> dict[str, Any]:
    typed: dict[str, Any] = config["static_resources"]["listeners"][0]["filter_chains"][0][
        "filters"
    ][0]["typed_config"]
    return typed


def placed(kind: str, snippet: Any) -> dict[str, Any]:
    """`snippet` in a complete bootstrap: as is, as the HCM's fields, or as its ext_authz
    filter (over HTTP for an `http_service` filter)."""
    if kind == "bootstrap":
        return dict(snippet)
    if kind == "hcm":
        config = bootstrap(_options())
        _hcm(config).update(snippet)
        return config
    assert kind == "http_filter", kind
    (entry,) = snippet
    over_http = "http_service" in entry["typed_config"]
    config = http_bootstrap(_options(), path_prefix="") if over_http else bootstrap(_options())
    filters = _hcm(config)["http_filters"]
    (index,) = [i for i, f in enumerate(filters) if f["name"] == entry["name"]]
    filters[index] = entry
    return config


@pytest.mark.parametrize(("where", "kind", "text"), SNIPPETS, ids=[s[0] for s in SNIPPETS])
def test_envoy_accepts_the_snippet(where: str, kind: str, text: str, tmp_path: Path) -> None:
    assert "..." not in text, f"{where}: an elided snippet cannot be copied"
    path = tmp_path / "envoy.yaml"
    path.write_text(yaml.safe_dump(placed(kind, yaml.safe_load(text))))
    validate(path)


def test_a_broken_snippet_is_refused(tmp_path: Path) -> None:
    """The check above can fail: the http_filter snippet with an unknown field."""
    (text,) = [t for _, kind, t in SNIPPETS if kind == "http_filter"]
    snippet = yaml.safe_load(text)
    broken = copy.deepcopy(snippet)
    broken[0]["typed_config"]["no_such_field"] = 1
    path = tmp_path / "envoy.yaml"
    path.write_text(yaml.safe_dump(placed("http_filter", broken)))
    with pytest.raises(EnvoyError, match="no_such_field"):
        validate(path)


def test_the_http_filter_snippet_is_what_envoy_config_generates() -> None:
    """docs/http-mode.md's hand-written filter is the generated one, so it cannot drift."""
    (text,) = [t for _, kind, t in SNIPPETS if kind == "http_filter"]
    (entry,) = yaml.safe_load(text)
    generated = http_bootstrap(_options(), path_prefix="")
    (ours,) = [f for f in _hcm(generated)["http_filters"] if f["name"] == entry["name"]]
    assert entry == yaml.safe_load(yaml.safe_dump(ours))
