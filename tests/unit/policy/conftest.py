"""Builders for requests, identities and policy sets, so tests read like tables."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest

from authz.errors import PolicyError, Problem
from authz.model import EndUser, Identity, Request, Workload
from authz.policy import PolicySet, build_policy_set

ISSUER = "https://id.example.com"


def req(
    path: str = "/",
    method: str = "GET",
    host: str = "shop.example.com",
    *,
    headers: dict[str, str] | None = None,
    ip: str | None = "10.1.2.3",
    port: int | None = 8080,
) -> Request:
    """A request as wire/inbound would build it (path already normalized)."""
    return Request(
        method=method,
        path=path,
        host=host,
        raw_path=path,
        headers=headers or {},
        source_ip=ip,
        destination_port=port,
    )


def workload(principal: str = "spiffe://cluster.local/ns/shop/sa/frontend") -> Workload:
    """A workload; SPIFFE parts are filled in from a SPIFFE principal."""
    if principal.startswith("spiffe://"):
        td, rest = principal[len("spiffe://") :].split("/", 1)
        parts = rest.split("/")
        ns = parts[1] if len(parts) >= 4 and parts[0] == "ns" else None
        sa = parts[3] if len(parts) >= 4 and parts[2] == "sa" else None
        return Workload(principal, td, ns, sa)
    return Workload(principal)


def user(sub: str = "alice", iss: str = ISSUER, **claims: Any) -> EndUser:
    return EndUser(iss, sub, {"iss": iss, "sub": sub, **claims})


def ident(principal: str | None = None, *, jwt: EndUser | None = None) -> Identity:
    return Identity(workload=workload(principal) if principal else None, user=jwt)


ANON = Identity()
FRONTEND = "spiffe://cluster.local/ns/shop/sa/frontend"


def policy(*files: str, names: list[str] | None = None) -> PolicySet:
    """Compile YAML texts (dedented) as files named p0.yaml, p1.yaml, ... (or `names`)."""
    names = names or [f"p{i}.yaml" for i in range(len(files))]
    return build_policy_set(
        (name, textwrap.dedent(text), "/policies") for name, text in zip(names, files, strict=True)
    )


def problems(*files: str, names: list[str] | None = None) -> list[Problem]:
    """The problems a set of YAML texts is rejected with (fails if it is accepted)."""
    with pytest.raises(PolicyError) as info:
        policy(*files, names=names)
    return info.value.problems
