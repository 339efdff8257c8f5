"""The Rego policy the OPA-Envoy peer runs makes the bench policy's decision (`opa eval` on the
prebuilt binary; skipped, like the bench part, when the binary is not there)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bench import fixtures, opa


def _decide(binary: Path, policy: Path, tmp: Path, http: dict[str, Any]) -> bool:
    path = http["path"].split("?", 1)[0]
    document = {
        "attributes": {"request": {"http": http}},
        "parsed_path": [p for p in path.split("/") if p] if path != "/" else [],
    }
    (tmp / "input.json").write_text(json.dumps(document))
    argv = [str(binary), "eval", "--format", "json", "-d", str(policy)]
    argv += ["-i", str(tmp / "input.json"), "data.envoy.authz.allow"]
    out = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    return bool(json.loads(out)["result"][0]["expressions"][0]["value"])


@pytest.mark.skipif(opa.missing_reason() is not None, reason=str(opa.missing_reason()))
def test_the_rego_policies_decide_like_the_bench_policy(tmp_path: Path) -> None:
    binary = opa.unpack(tmp_path)
    key, other = fixtures.make_key("RS256"), fixtures.make_key("RS256")
    good = key.token()
    jwt = tmp_path / "jwt.rego"
    jwt.write_text(opa.rego("jwt", {"keys": [key.jwk()]}))
    path_only = tmp_path / "path.rego"
    path_only.write_text(opa.rego("path", {}))

    def http(token: str | None, *, method: str = "GET", path: str = fixtures.PATH) -> Any:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        return {"method": method, "host": fixtures.HOST, "path": path, "headers": headers}

    assert _decide(binary, jwt, tmp_path, http(good))
    assert _decide(binary, jwt, tmp_path, http(good, path="/api/orders?page=2"))
    assert not _decide(binary, jwt, tmp_path, http(None))
    assert not _decide(binary, jwt, tmp_path, http(other.token()))  # not in the JWKS
    assert not _decide(binary, jwt, tmp_path, http(key.token(lifetime=-3600)))  # expired
    assert not _decide(binary, jwt, tmp_path, http(good, method="POST"))
    assert not _decide(binary, jwt, tmp_path, http(good, path="/api/orders/1/2"))
    assert _decide(binary, path_only, tmp_path, http(None))
    assert not _decide(binary, path_only, tmp_path, http(None, path="/api/other"))
