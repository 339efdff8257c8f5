"""Lint findings on small real policy directories: each code fires, and only where it should."""

from __future__ import annotations

from pathlib import Path

from authz.authoring.lint import Finding, lint
from authz.policy import load_policy_set

from .conftest import EXAMPLE_POLICIES, write


def findings(directory: Path) -> list[Finding]:
    policy_set = load_policy_set(str(directory))
    sources = {f.file: Path(f.file).read_text() for f in policy_set.files}
    return lint(policy_set, sources)


def codes(directory: Path) -> set[tuple[str, str]]:
    return {(f.subject, f.code) for f in findings(directory)}


AUTH = """
hosts: [api.example.com]
authentication:
  mtls: {trust_domains: [cluster.local]}
  jwt: [{issuer: https://id.example, audiences: [api], jwks_uri: "https://id.example/jwks"}]
"""


def test_the_examples_have_only_the_deliberate_findings() -> None:
    assert codes(EXAMPLE_POLICIES) == {
        ("ops-reads-admin", "dry-run-rule"),
        ("audit-payment-refunds", "audit-rule"),
    }


def test_open_allow_and_any_principal(tmp_path: Path) -> None:
    write(
        tmp_path,
        "a.yaml",
        AUTH
        + """
rules:
  - {name: everything, action: allow}
  - {name: star-path, action: allow, to: [{methods: [GET], paths: ["*"]}]}
  - {name: narrow, action: allow, to: [{paths: [/healthz]}]}
  - {name: gated-by-claim, action: allow, when: [{claim: scope, contains: x}]}
  - {name: any-workload, action: allow, from: [{principals: ["*"]}], to: [{paths: ["/{**}"]}]}
  - {name: any-workload-narrow, action: allow, from: [{principals: ["*"]}], to: [{paths: [/a]}]}
""",
    )
    found = codes(tmp_path)
    assert ("everything", "open-allow") in found and ("star-path", "open-allow") in found
    assert ("any-workload", "any-principal") in found
    assert not {s for s, _ in found} & {"narrow", "gated-by-claim", "any-workload-narrow"}


def test_shadowed_by_a_deny(tmp_path: Path) -> None:
    write(
        tmp_path,
        "a.yaml",
        AUTH
        + """
roles:
  reader: [{methods: [GET], paths: ["/api/{*}", /api/list]}]
rules:
  - {name: read-api, action: allow, from: [{namespaces: [a]}], to: [{role: reader}]}
  - {name: read-other, action: allow, from: [{namespaces: [a]}], to: [{paths: [/api]}]}
  - {name: gated-deny-does-not-cover, action: allow, to: [{paths: [/b/x]}]}
""",
    )
    write(
        tmp_path,
        "platform.yaml",
        """
rules:
  - {name: no-api, action: deny, to: [{paths: ["/api/{**}"]}]}
  - {name: no-b-for-x, action: deny, from: [{namespaces: [x]}], to: [{paths: ["/b/{**}"]}]}
""",
    )
    found = [f for f in findings(tmp_path) if f.code == "shadowed-by-deny"]
    assert [f.subject for f in found] == ["read-api"]
    assert "'no-api'" in found[0].message and "platform.yaml:2" in found[0].message


def test_a_deny_on_other_hosts_does_not_shadow(tmp_path: Path) -> None:
    write(
        tmp_path,
        "a.yaml",
        AUTH
        + "rules: [{name: ok, action: allow, from: [{namespaces: [a]}], to: [{paths: [/x]}]}]\n",
    )
    write(
        tmp_path, "b.yaml", "hosts: [other.example.com]\nrules: [{name: deny-all, action: deny}]\n"
    )
    assert ("ok", "shadowed-by-deny") not in codes(tmp_path)


def test_unreachable_rules(tmp_path: Path) -> None:
    write(
        tmp_path,
        "a.yaml",
        AUTH
        + """
rules:
  - {name: unknown-issuer, action: allow, from: [{issuers: [https://nobody]}], to: [{paths: [/a]}]}
  - {name: foreign-mesh, action: allow, from: [{principals: ["spiffe://other.mesh/ns/a/sa/b"]}], to: [{paths: [/a]}]}
  - {name: contradiction, action: allow, from: [{namespaces: [a]}], to: [{methods: [GET], not_methods: [GET]}]}
  - {name: fine, action: allow, from: [{issuers: [https://id.example]}], to: [{paths: [/a]}]}
""",  # noqa: E501 - a policy test vector: one rule per line, kept as written
    )
    found = codes(tmp_path)
    for name in ("unknown-issuer", "foreign-mesh", "contradiction"):
        assert (name, "unreachable") in found
    assert ("fine", "unreachable") not in found


def test_roles_hosts_and_providers(tmp_path: Path) -> None:
    write(
        tmp_path,
        "a.yaml",
        """
hosts: [open.example.com]
roles:
  spare: [{paths: [/s]}]
rules:
  - {name: health, action: allow, to: [{paths: [/healthz]}]}
""",
    )
    write(
        tmp_path,
        "b.yaml",
        """
hosts: [jwt.example.com]
authentication:
  jwt:
    - {issuer: https://plain, jwks_uri: "http://keys.example.com/jwks"}
    - {issuer: https://local, audiences: [x], jwks_uri: "http://127.0.0.1:8080/jwks"}
rules:
  - {name: users, action: allow, from: [{issuers: [https://plain]}], to: [{paths: [/u]}]}
""",
    )
    result = findings(tmp_path)
    found = {(f.subject, f.code, f.line) for f in result}
    assert ("spare", "unused-role", 3) in found
    assert ("open.example.com", "unauthenticated-host", 1) in found
    assert ("https://plain", "jwt-no-audiences", 4) in found
    assert ("https://plain", "jwks-plain-http", 4) in found
    assert not any(f.subject == "https://local" for f in result)  # loopback http is fine
    assert not any(f.subject == "jwt.example.com" for f in result)


def test_finding_format() -> None:
    assert (
        str(Finding("p/a.yaml", 3, "open-allow", "r", "why")) == "p/a.yaml:3: [r] open-allow: why"
    )


def test_tenant_takeover(tmp_path: Path) -> None:
    write(
        tmp_path,
        "shop.yaml",
        """
        hosts: [shop.example.com]
        authentication: {mtls: {trust_domains: [cluster.local]}}
        rules:
          - {name: shop-reads, action: allow, from: [{namespaces: [shop]}], to: [{paths: [/a]}]}
        """,
    )
    write(
        tmp_path,
        "wide.yaml",
        """
        hosts: [blog.example.org, "*.example.com"]
        authentication: {mtls: {trust_domains: [cluster.local]}}
        rules:
          - {name: wide-reads, action: allow, from: [{namespaces: [blog]}], to: [{paths: [/b]}]}
        """,
    )
    write(
        tmp_path,
        "everywhere.yaml",
        """
        rules:
          - {name: no-debug, action: deny, to: [{paths: [/debug]}]}
          - {name: metrics-for-all, action: allow, from: [{namespaces: [obs]}], to: [{paths: [/m]}]}
          - {name: later, action: allow, dry_run: true, to: [{paths: [/m]}]}
        """,
    )
    found = [f for f in findings(tmp_path) if f.code in ("hostless-allow", "host-overlap")]
    assert [str(f).replace(f"{tmp_path}/", "") for f in found] == [
        "everywhere.yaml:3: [metrics-for-all] hostless-allow: the file lists no `hosts`, so this "
        "allow applies to every host, other tenants' included; list the hosts it is for",
        "wide.yaml:1: [*.example.com] host-overlap: also covers shop.example.com of "
        "shop.yaml: this file's allow rules (wide-reads) apply to that host too",
    ]


def test_overlap_rules() -> None:
    from authz.authoring.lint import _covers_host

    assert _covers_host("*.example.com", "shop.example.com")
    assert _covers_host("*.example.com", "*.shop.example.com")
    assert _covers_host("a.example.com", "a.example.com")
    assert not _covers_host("*.shop.example.com", "*.example.com")
    assert not _covers_host("*.example.com", "example.com")
    assert not _covers_host("*.example.com", "badexample.com")


def test_introspection_secret_and_plain_http(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(
        "hosts: [a.example.com]\n"
        "authentication:\n"
        "  introspection:\n"
        "    - name: corp\n"
        "      endpoint: http://127.0.0.1:9/i\n"
        "      issuer: https://id.example.com\n"
        "      client_id: a\n"
        "      client_secret_file: missing.txt\n"
        "    - name: env\n"
        "      endpoint: https://id.example.com/i\n"
        "      issuer: https://id.example.com\n"
        "      client_id: a\n"
        "      client_secret_env: LINT_TEST_SURELY_UNSET_SECRET\n"
        "rules:\n"
        "  - {name: r, action: allow, from: [{issuers: [https://id.example.com]}]}\n"
    )
    found = {(f.line, f.code) for f in findings(tmp_path)}
    assert (4, "introspection-secret-missing") in found
    assert (4, "introspection-plain-http") in found
    assert (9, "introspection-secret-missing") in found
    assert (9, "introspection-plain-http") not in found
    (tmp_path / "missing.txt").write_text("s3cret\n")
    found = {(f.line, f.code) for f in findings(tmp_path)}
    assert (4, "introspection-secret-missing") not in found
