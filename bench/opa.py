"""OPA-Envoy as a peer: the prebuilt binary, a Rego policy that makes the bench's decision, and a
process pinned to N cores (`GOMAXPROCS=N` + `taskset`).

The binary is the user's: `python -m bench run --opa-envoy PATH` or `$BENCH_OPA_ENVOY`
names it (the executable, or an `.xz` of it, unpacked to a temporary path at bench time, never
into the repository). Without it the OPA layouts are skipped, with a message saying how to get one.

The Rego policy makes the same decision as the bench's `orders-api` rule for the request the
load generators send (no mTLS peer behind wrk): GET or HEAD, host `api.bench.example`, path
`/api/orders` or `/api/orders/<one segment>`, and an RS256 bearer token that verifies against
the same JWKS with the same `iss` and `aud` and has a `sub` (authz refuses tokens without one).
The `path` variant drops the token check: what OPA costs when it does not verify a JWT.
"""

from __future__ import annotations

import contextlib
import json
import lzma
import os
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from bench import fixtures
from bench.procs import free_port, pinned, started, wait_port

# Where the binary is named (`--opa-envoy PATH` sets it for the run); the one place it is read.
ENV = "BENCH_OPA_ENVOY"
MEASURED = "opa-envoy 1.9.0, linux-amd64"  # the version docs/benchmarks.md reports
VARIANTS = ("jwt", "path")


def archive() -> Path | None:
    """The binary (or an `.xz` of it) that $BENCH_OPA_ENVOY names, if it is a file."""
    named = os.environ.get(ENV, "")
    return Path(named) if named and Path(named).is_file() else None


def missing_reason() -> str | None:
    """Why OPA cannot run here (and how to get it), or None when it can."""
    if archive() is not None:
        return None
    named = os.environ.get(ENV, "")
    where = f"${ENV}={named} is not a file" if named else f"no --opa-envoy PATH or ${ENV}"
    return (
        f"OPA-Envoy skipped: {where}. Download the opa_envoy binary for your platform from a "
        f"release of the open-policy-agent/opa-envoy-plugin project ({MEASURED} was measured), "
        f"then pass --opa-envoy PATH (the binary, or an .xz of it)"
    )


def unpack(tmp: Path) -> Path:
    """The binary, copied (unpacked if `.xz`) into `tmp` (a bench's temporary directory)."""
    source = archive()
    if source is None:
        raise RuntimeError(missing_reason())
    binary = tmp / "opa-envoy"
    opener = lzma.open if source.suffix == ".xz" else open
    with opener(source, "rb") as packed, open(binary, "wb") as out:
        shutil.copyfileobj(packed, out)
    binary.chmod(0o755)
    return binary


def rego(variant: str, jwks: dict[str, object]) -> str:
    """The Rego policy for `variant` ("jwt" or "path")."""
    token_rule = ""
    token_check = ""
    if variant == "jwt":
        token_check = "\n\ttoken_valid"
        token_rule = f"""
jwks := {json.dumps(json.dumps(jwks))}

token_valid if {{
	auth := http.headers.authorization
	startswith(auth, "Bearer ")
	token := substring(auth, 7, -1)
	[valid, header, payload] := io.jwt.decode_verify(token, {{
		"cert": jwks,
		"iss": {json.dumps(fixtures.ISSUER)},
		"aud": {json.dumps(fixtures.AUDIENCE)},
	}})
	valid
	header.alg == "RS256"
	is_string(payload.sub)
	payload.sub != ""
}}
"""
    elif variant != "path":
        raise ValueError(variant)
    return f"""package envoy.authz

import rego.v1

default allow := false

http := input.attributes.request.http

allow if {{
	http.method in {{"GET", "HEAD"}}
	http.host == {json.dumps(fixtures.HOST)}
	path_ok{token_check}
}}

# input.parsed_path is the path without the query string, split on "/".
path_ok if input.parsed_path == ["api", "orders"]

path_ok if {{
	count(input.parsed_path) == 3
	input.parsed_path[0] == "api"
	input.parsed_path[1] == "orders"
	input.parsed_path[2] != ""
}}
{token_rule}"""


@contextlib.contextmanager
def serve(
    tmp: Path,
    binary: Path,
    variant: str,
    keys: list[fixtures.Key],
    *,
    gomaxprocs: int,
    cores: str | None,
) -> Iterator[int]:
    """OPA-Envoy running `variant`, pinned; yields its ext_authz gRPC port."""
    grpc_port, http_port = free_port(), free_port()
    policy = tmp / f"opa-{variant}-{grpc_port}.rego"
    policy.write_text(rego(variant, {"keys": [k.jwk() for k in keys]}))
    config = tmp / f"opa-{grpc_port}.json"
    config.write_text(
        json.dumps(
            {
                "plugins": {
                    "envoy_ext_authz_grpc": {
                        "addr": f"127.0.0.1:{grpc_port}",
                        "path": "envoy/authz/allow",
                    }
                },
                "decision_logs": {"console": False},
            }
        )
    )
    argv = [
        str(binary),
        "run",
        "--server",
        "--addr",
        f"127.0.0.1:{http_port}",
        "--disable-telemetry",
        "--log-level",
        "error",
        "--config-file",
        str(config),
        str(policy),
    ]
    log = tmp / f"opa-{variant}-{grpc_port}.log"
    with started(pinned(argv, cores), log=log, env={"GOMAXPROCS": str(gomaxprocs)}) as proc:
        wait_port(grpc_port, proc, log)
        wait_port(http_port, proc, log)
        yield grpc_port


def assert_denies_without_token(listener: int) -> None:
    """A request without a token must not pass (proves a JWT layout checks something)."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{listener}{fixtures.PATH}", headers={"Host": fixtures.HOST}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            status = answer.status
    except urllib.error.HTTPError as error:
        status = error.code
    if status < 400:
        raise RuntimeError(f"answered {status} to a request without a token")
