"""A policy set -> Envoy's own HTTP filters, built from typed Envoy API objects.

The filters, in order (docs/export.md explains each):

1. `envoy.filters.http.header_mutation`: removes client-sent copies of the headers jwt_authn
   sets from claims (the service removes them too, so a client never smuggles `x-user-id`);
2. `envoy.filters.http.rbac` (a matcher tree), `authz.tokens`: the token-header spellings the
   service refuses (authz/export/tokens.py), before jwt_authn reads or removes the header;
3. `envoy.filters.http.jwt_authn`: the providers (inline, file or remote key sets); a present
   token must verify (401 otherwise), a missing one is allowed; the verified payload and
   header go to dynamic metadata;
4. `envoy.filters.http.rbac`, action DENY: what the engine refuses before any rule (400s:
   invalid path, method, host; a verified token without `sub`, without `kid` for a JWKS of
   several keys or a remote one, or with an `alg` its provider does not list) and the enforced
   deny rules, each twice: on the path as sent and on the path
   with `;params` cut (the engine's hardening); dry_run deny rules as shadow rules;
5. `envoy.filters.http.rbac`, action ALLOW: the enforced allow rules; dry_run allow rules as
   shadow rules. Nothing matches: 403;
6. `envoy.filters.http.rbac`, action LOG: the audit rules (Envoy marks the access log).

Every rule is guarded by its file's `hosts`. What Envoy cannot decide the way the engine does is
a `Finding` naming the rule (or the provider) and why; `decides=True` findings would change an
allow or a deny, the others only change the answer's details (status, headers).
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any

from authz.envoy_bootstrap import AUTHZ_CLUSTER, EXPORTED_FILTERS, HYBRID_FILTERS
from authz.export.envoy_api import core, hm, hrbac, http_type, m, mutation, rbac, xa
from authz.export.hosts import Auth, HostClass, host_classes
from authz.export.jwt_authn import jwt_authn, needs_jwt, provider_findings
from authz.export.matchers import (
    NotExportable,
    p_any,
    q_and,
    q_not,
    q_or,
)
from authz.export.refusals import refusals
from authz.export.remote_jwks import RemoteSet, cluster, resolve
from authz.export.render import EnvoyExport, Finding
from authz.export.rules import rule_policy
from authz.export.tokens import tokens_filter
from authz.identity.keys import REFRESH_SECONDS
from authz.policy.decide.compiler import PolicySet
from authz.policy.language.spec import Authentication, JwtProvider

FILTER_NAMES = tuple(name for name, _ in EXPORTED_FILTERS)


def export_envoy(
    policy: PolicySet,
    hybrid: bool = False,
    svid_only: bool = False,
    ca_file: str | None = None,
    jwks_refresh_seconds: float = REFRESH_SECONDS,
) -> EnvoyExport:
    """The Envoy filters enforcing `policy`, and every finding.

    `hybrid`: hosts whose applying files are all exportable are decided by Envoy alone (their
    requests never reach ext_authz); every other host is decided by the service, through
    ext_authz, exactly as without the export (its rules, tokens and 400s); what cannot be
    exported is then reported as kept in ext_authz, not refused.
    `svid_only`: the operator says the mesh CA issues SVIDs alone (one URI SAN per
    certificate), so allow rules may name `principals` and `namespaces` (rbac_fields.py).
    `ca_file`: the CA bundle Envoy checks a remote JWKS server's certificate against (default:
    the trust store the service's own fetch uses). `discovery: true` is resolved now.
    `jwks_refresh_seconds`: how long Envoy keeps a fetched remote set (the service's refresh
    period unless the service is configured otherwise).
    """
    out = EnvoyExport()
    files = policy.files
    roles = {r.name: r.entries for f in files for r in f.roles}
    all_classes = host_classes(files)
    classes = all_classes
    if len({c.authentication for c in classes}) == 1 and not hybrid:
        classes = [HostClass("(every host)", (), classes[0].authentication)]
    providers = tuple(policy.jwt_providers)
    auth = Auth(tuple(classes), tuple(p.issuer for p in providers))
    findings: list[Finding] = []
    remotes: dict[JwtProvider, RemoteSet] = {}
    for p in providers:
        first = next(f.file for f in files if p in f.jwt_providers)
        findings += provider_findings(p, first)
        try:
            remote = resolve(p)
        except ValueError as error:
            findings.append(Finding(first, 1, f"provider {p.issuer}", str(error)))
            continue
        if remote is not None:
            remotes[p] = remote
            findings.append(
                Finding(
                    first,
                    1,
                    f"provider {p.issuer}",
                    f"keys fetched by Envoy from {remote.uri} ({remote.source}), every "
                    f"{jwks_refresh_seconds:g} s: a token signed by a newly rotated key is "
                    "accepted once Envoy's copy is refreshed, by the service at once",
                    decides=False,
                )
            )
    for f in files:
        lines = f.api_key_lines or (1,) * len(f.api_key_providers)
        for line, key in zip(lines, f.api_key_providers, strict=False):
            findings.append(
                Finding(
                    f.file,
                    line,
                    f"api_keys {key.name}",
                    "API keys: Envoy cannot check a presented key (the service answers 401 for "
                    "an unknown one) nor tell API-key identities apart",
                )
            )
        # Introspection (RFC 7662) and certificate binding (RFC 8705): nothing in Envoy checks them.
        intro_lines = f.introspection_lines or (1,) * len(f.introspection_providers)
        for intro, intro_line in zip(f.introspection_providers, intro_lines, strict=False):
            findings.append(
                Finding(
                    f.file,
                    intro_line,
                    f"introspection {intro.name}",
                    "token introspection: Envoy cannot ask an RFC 7662 endpoint",
                )
            )
        for bound in f.jwt_providers:
            if bound.certificate_bound:
                findings.append(
                    Finding(
                        f.file,
                        1,
                        f"jwt {bound.issuer} certificate_bound",
                        "certificate_bound: Envoy's jwt_authn does not check cnf x5t#S256 "
                        "against the client certificate",
                    )
                )
    for c in classes:
        if len({p.locations for p in c.authentication.jwt_providers}) > 1:
            findings.append(
                Finding(
                    c.files[0],
                    1,
                    f"hosts {c.label}",
                    "its jwt providers look for tokens in different places (`from`)",
                )
            )
    removed = {h for p in providers for _, h in p.claims_to_headers}
    token_headers = {
        loc.header for p in providers if not p.forward for loc in p.locations if loc.header
    }
    deny = refusals(auth, providers)
    deny_shadow: dict[str, rbac.Policy] = {}
    allow: dict[str, rbac.Policy] = {}
    allow_shadow: dict[str, rbac.Policy] = {}
    audit: dict[str, rbac.Policy] = {}
    for f in files:
        for rule in f.rules:
            where = (rule.file, rule.line, rule.name)
            try:
                for cond in rule.when:
                    if cond.kind == "header" and cond.name in removed | token_headers:
                        raise NotExportable(
                            f"header condition on {cond.name}: jwt_authn sets or removes it first"
                        )
                policy_ = rule_policy(rule, f.hosts, auth, roles, svid_only=svid_only)
                second = (
                    rule_policy(rule, f.hosts, auth, roles, True, svid_only)
                    if rule.action == "deny"
                    else None
                )
            except NotExportable as exc:
                findings.append(Finding(*where, str(exc)))
                continue
            if rule.action == "audit":
                audit[rule.name] = policy_
                continue
            target = {
                ("deny", False): deny,
                ("deny", True): deny_shadow,
                ("allow", False): allow,
                ("allow", True): allow_shadow,
            }[(rule.action, rule.dry_run)]
            target[rule.name] = policy_
            if second is not None:
                target[rule.name + ";params"] = second
            if rule.action == "allow" and not rule.dry_run and needs_jwt(rule):
                findings.append(
                    Finding(
                        *where,
                        "no token: Envoy answers 403 where the service answers 401 with a "
                        "Bearer challenge",
                        decides=False,
                    )
                )
    native = classes
    if hybrid:
        # A finding in a file (a rule or a provider it declares) sends its hosts to ext_authz.
        bad = {f.file for f in findings if f.decides}
        bad |= {
            g.file for g in files for p in g.jwt_providers for f in findings
            if f.decides and f.subject == f"provider {p.issuer}"
        }  # fmt: skip
        bad_labels = {f.subject.removeprefix("hosts ") for f in findings if f.decides}
        native = [c for c in classes if not bad.intersection(c.files) and c.label not in bad_labels]
        findings = [
            dataclasses.replace(f, decides=False, kept=True) if f.decides else f for f in findings
        ]
    out.findings = findings
    jwt_classes = [
        c if c in native else dataclasses.replace(c, authentication=Authentication())
        for c in classes
    ]
    filters: list[tuple[str, Any]] = [
        (
            FILTER_NAMES[0],
            hm.HeaderMutation(
                mutations=hm.Mutations(
                    request_mutations=[mutation.HeaderMutation(remove=h) for h in sorted(removed)]
                )
            ),
        ),
        (FILTER_NAMES[1], tokens_filter(auth)),
        (FILTER_NAMES[2], jwt_authn(providers, jwt_classes, remotes, jwks_refresh_seconds)),
    ]
    if hybrid:
        # The same seven filters whatever the split (ECDS names them once in the bootstrap);
        # with every host native, authz.route marks nothing and ext_authz never runs.
        route: dict[str, rbac.Policy] = {}
        if len(native) < len(classes):
            mine = q_or([c.permission() for c in native]) if native else q_not(_ANY)
            for policies in (deny, deny_shadow, allow, allow_shadow, audit):
                for name, pol in policies.items():
                    policies[name] = rbac.Policy(
                        permissions=[q_and([mine, q_or(pol.permissions)])],
                        principals=pol.principals,
                    )
            theirs = rbac.Policy(permissions=[q_not(mine)], principals=[p_any()])
            allow["authz.ext_authz"] = route["authz.ext_authz"] = theirs
        filters += [
            (FILTER_NAMES[3], _rbac(rbac.RbacAction.DENY, deny, deny_shadow, "deny_")),
            (FILTER_NAMES[4], _rbac(rbac.RbacAction.ALLOW, allow, allow_shadow, "allow_")),
            (HYBRID_FILTERS[0][0], _rbac(rbac.RbacAction.LOG, route, None, "")),
            (HYBRID_FILTERS[1][0], _ext_authz()),
        ]
    else:
        filters += [
            (FILTER_NAMES[3], _rbac(rbac.RbacAction.DENY, deny, deny_shadow, "deny_")),
            (FILTER_NAMES[4], _rbac(rbac.RbacAction.ALLOW, allow, allow_shadow, "allow_")),
        ]
    filters.append((FILTER_NAMES[5], _rbac(rbac.RbacAction.LOG, audit, None, "audit_")))
    out.filters = filters
    out.clusters = [cluster(r, ca_file) for r in {r.cluster: r for r in remotes.values()}.values()]
    return out


_ANY = rbac.Permission(any=True)


def _ext_authz() -> xa.ExtAuthz:
    """ext_authz to the service (cluster `authz`, as `authz envoy-config` declares it), enabled
    only where authz.route marked the request (RBAC LOG sets envoy.common access_log_hint)."""
    return xa.ExtAuthz(
        grpc_service=core.GrpcService(
            envoy_grpc=core.GrpcServiceEnvoyGrpc(cluster_name=AUTHZ_CLUSTER),
            timeout=datetime.timedelta(milliseconds=500),
        ),
        transport_api_version=core.ApiVersion.V3,
        failure_mode_allow=False,
        status_on_error=http_type.HttpStatus(code=http_type.StatusCode.ServiceUnavailable),
        include_peer_certificate=True,
        filter_enabled_metadata=m.MetadataMatcher(
            filter="envoy.common",
            path=[m.MetadataMatcherPathSegment(key="access_log_hint")],
            value=m.ValueMatcher(bool_match=True),
        ),
    )


def _rbac(
    action: rbac.RbacAction,
    policies: dict[str, rbac.Policy],
    shadow: dict[str, rbac.Policy] | None,
    prefix: str,
) -> hrbac.Rbac:
    return hrbac.Rbac(
        rules=rbac.Rbac(action=action, policies=policies),
        shadow_rules=rbac.Rbac(action=action, policies=shadow) if shadow else None,
        shadow_rules_stat_prefix=prefix if shadow else "",
    )
