"""The forward-auth configurations (deploy/nginx/, deploy/traefik/) are one source: the docs show
them verbatim, the README only lines from them, and every list of replaced headers in them is
the same list (the one the service is told in X-Authz-Proxy-Replaces). The nginx files also run
against a real nginx in tests/e2e/test_forward_auth_nginx.py; there is no Traefik binary here,
so the Traefik file is checked as far as its structure goes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from tests.support.nginx import replaced_headers

REPO = Path(__file__).resolve().parents[2]
NGINX = REPO / "deploy" / "nginx"
TRAEFIK = REPO / "deploy" / "traefik" / "dynamic.yml"
FILES = ("deploy/nginx/site.conf", "deploy/nginx/authz.conf", "deploy/nginx/authz-location.conf",
         "deploy/traefik/dynamic.yml")  # fmt: skip
# Always set or removed by the service on an allow (authz.engine), whatever the policies say.
IDENTITY = {"x-authz-principal", "x-authz-request-principal", "x-authz-api-key",
            "x-authz-decision-id"}  # fmt: skip


def _names(value: str) -> list[str]:
    return [name.strip().lower() for name in value.split(",")]


def nginx_replaces_list() -> list[str]:
    return _names(replaced_headers())


def nginx_replaced_headers() -> list[str]:
    """Headers authz-location.conf sets from the answer: `auth_request_set $v
    $upstream_http_<name>` then `proxy_set_header <Name> $v`."""
    text = (NGINX / "authz-location.conf").read_text()
    from_answer = dict(re.findall(r"auth_request_set \$(\w+) \$upstream_http_(\w+);", text))
    replaced = []
    for name, variable in re.findall(r"proxy_set_header ([\w-]+) \$(\w+);", text):
        assert from_answer[variable] == name.lower().replace("-", "_"), name
        replaced.append(name.lower())
    return replaced


def traefik() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(TRAEFIK.read_text())
    return config["http"]  # type: ignore[no-any-return]


def test_every_list_of_replaced_headers_is_the_same() -> None:
    listed = nginx_replaces_list()
    assert len(set(listed)) == len(listed)
    assert sorted(nginx_replaced_headers()) == sorted(listed)
    middlewares = traefik()["middlewares"]
    forward = middlewares["authz"]["forwardAuth"]
    assert [h.lower() for h in forward["authResponseHeaders"]] == listed
    custom = middlewares["authz-replaces"]["headers"]["customRequestHeaders"]
    assert _names(custom["X-Authz-Proxy-Replaces"]) == listed


def test_the_list_covers_the_service_and_the_example_policies() -> None:
    """The fixed identity headers, the default token header, cookies, and every header the
    example policies (policies/) set from claims or read a token or key from."""
    listed = set(nginx_replaces_list())
    needed = IDENTITY | {"authorization", "cookie"}
    for path in sorted((REPO / "policies").glob("*.yaml")):
        if path.name.endswith(".keys.yaml"):
            continue
        auth = (yaml.safe_load(path.read_text()) or {}).get("authentication", {})
        for provider in [*auth.get("jwt", []), *auth.get("api_keys", [])]:
            needed.update(h.lower() for h in provider.get("claims_to_headers", {}).values())
            needed.update(w["header"].lower() for w in provider.get("from", []) if "header" in w)
    assert "x-user-id" in needed  # policies/shop.yaml's claims_to_headers
    assert listed >= needed, needed - listed


def test_traefik_middleware_order_and_settings() -> None:
    config = traefik()
    (router,) = config["routers"].values()
    assert router["middlewares"] == ["authz-replaces", "authz"]  # the list is set first
    forward = config["middlewares"]["authz"]["forwardAuth"]
    assert forward["trustForwardHeader"] is False  # Traefik's own X-Forwarded-* only
    # With authRequestHeaders set, Traefik would send only those: the list would not arrive.
    assert "authRequestHeaders" not in forward
    assert set(forward) <= {"address", "trustForwardHeader", "authResponseHeaders"}
    assert forward["address"].startswith("http://")


def test_the_docs_show_the_files_verbatim_and_the_readme_only_their_lines() -> None:
    docs = (REPO / "docs" / "http-mode.md").read_text()
    for path in FILES:
        assert f"`{path}`:\n\n```" in docs, path
        assert (REPO / path).read_text() in docs, f"docs/http-mode.md differs from {path}"
    readme = (REPO / "README.md").read_text()
    (snippet,) = re.findall(r"```nginx\n(.*?)```", readme, re.DOTALL)
    site = {line.strip() for line in (NGINX / "site.conf").read_text().splitlines()}
    for line in snippet.splitlines():
        code = line.split("#", 1)[0].strip()
        if code:
            assert code in site, f"README nginx line not in deploy/nginx/site.conf: {code}"
