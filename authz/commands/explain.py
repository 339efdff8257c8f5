"""`authz explain DIR --method M --path P ...`: the decision for one request, and why."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from typing import Any

from authz.commands._flags import (
    add_header_flag,
    add_policy_directory,
    add_request_line,
    header_flags,
)
from authz.policy.language.fields import describe

NAME = "explain"
HELP = "show the decision for one described request and what every rule of the host did with it"


def configure(parser: argparse.ArgumentParser) -> None:
    add_policy_directory(parser)
    add_request_line(parser)
    parser.add_argument(
        "--principal",
        help="the mTLS peer principal, e.g. spiffe://cluster.local/ns/shop/sa/frontend",
    )
    parser.add_argument(
        "--claims",
        help="the claims of a verified JWT as JSON, with iss and sub, e.g. "
        '\'{"iss": "https://id.shop.example", "sub": "u1", "scope": "cart"}\'',
    )
    add_header_flag(parser)
    parser.add_argument(
        "--introspection",
        metavar="JSON",
        help="what an introspection endpoint answers for the request's opaque token, e.g. "
        '\'{"active": true, "sub": "u1", "scope": "cart"}\'',
    )
    parser.add_argument(
        "--certificate-thumbprint",
        metavar="X5T",
        help="the client certificate's x5t#S256 (base64url SHA-256 of its DER), for "
        "certificate-bound tokens",
    )
    parser.add_argument(
        "--api-key",
        metavar="PROVIDER/ID",
        help="a key of the set, named as <provider>/<id> (key files hold only hashes)",
    )
    parser.add_argument(
        "--context",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a context_extensions entry of the route; may be repeated",
    )
    parser.add_argument("--source-ip", help="the client address")
    parser.add_argument("--port", type=int, help="the destination port")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def run(args: argparse.Namespace) -> int:
    from authz.authoring.scenario import Scenario, explain_scenario
    from authz.errors import PolicyError
    from authz.policy import load_policy_set

    try:
        scenario = Scenario(
            method=args.method,
            path=args.path,
            host=args.host,
            principal=args.principal,
            headers=header_flags(args.header),
            claims=_claims(args.claims),
            source_ip=args.source_ip,
            port=args.port,
            api_key=args.api_key,
            context=_pairs(args.context, "--context"),
            introspection=_answer(args.introspection),
            certificate_thumbprint=args.certificate_thumbprint,
        )
    except ValueError as error:
        print(f"authz explain: {error}", file=sys.stderr)
        return 2
    try:
        policy_set = load_policy_set(args.directory)
    except PolicyError as error:
        for problem in error.problems:
            print(problem, file=sys.stderr)
        return 1
    explanation = explain_scenario(policy_set, scenario)
    if args.json:
        print(json.dumps(_jsonable(asdict(explanation)), indent=2))
    else:
        print(render(explanation))
    return 0


def _pairs(pairs: list[str], flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"{flag} {pair!r}: write KEY=VALUE")
        out[key] = value
    return out


def _claims(text: str | None) -> dict[str, Any] | None:
    return _json_object(text, "--claims", "iss", str, "at least an `iss` string")


def _answer(text: str | None) -> dict[str, Any] | None:
    return _json_object(text, "--introspection", "active", bool, "a boolean `active`")


def _json_object(
    text: str | None, flag: str, key: str, kind: type, needs: str
) -> dict[str, Any] | None:
    """A flag's JSON object, which must hold `key` of `kind`; None when the flag is absent."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as error:
        raise ValueError(f"{flag} is not JSON: {error}") from None
    if not isinstance(value, dict) or not isinstance(value.get(key), kind):
        raise ValueError(f"{flag} must be a JSON object with {needs}")
    return value


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def render(explanation: Any) -> str:
    """The human-readable form: decision first, then identity, then every rule."""
    d = explanation.decision
    verdict = "ALLOW" if d.allowed else "DENY"
    lines = [f"{verdict} {d.status} reason={d.reason}  (policy revision {explanation.revision})"]
    if d.challenge:
        lines.append(f"  WWW-Authenticate: {d.challenge}")
    lines.append(
        f"host: {explanation.host}  path: "
        f"{explanation.path if explanation.path is not None else '(refused)'}"
    )
    if explanation.files:
        lines.append(f"files: {', '.join(explanation.files)}")
    lines.append(
        f"workload: {explanation.principal or '-'}  end user: "
        f"{explanation.request_principal or '-'}  api key: {explanation.api_key_principal or '-'}"
    )
    for note in explanation.notes:
        lines.append(f"note: {note}")
    if explanation.rules:
        lines.append("rules:")
        width = max(len(r.name) for r in explanation.rules)
        for r in explanation.rules:
            mark = "=>" if r.decides else "  "
            kind = r.action + (" (dry_run)" if r.dry_run else "")
            outcome = r.effect if r.matched else f"no match: {r.failed}"
            lines.append(f" {mark} {r.name:<{width}}  {kind:<16} {outcome}  [{r.file}:{r.line}]")
            meaning = _meaning(r.failed)
            if meaning is not None:
                lines.append(f"    {' ' * width}  {meaning}")
            if r.captures:
                bound = ", ".join(f"{k}={v!r}" for k, v in sorted(r.captures.items()))
                lines.append(f"    {' ' * width}  captures: {bound}")
    if explanation.limits:
        lines.append("rate limits:")
        width = max(len(x.name) for x in explanation.limits)
        for x in explanation.limits:
            mark = "=>" if x.decides else "  "
            key = f"key {x.key}: {'present' if x.key_present else 'absent'}"
            outcome = x.state if x.matched else f"no match: {x.failed}"
            lines.append(f" {mark} {x.name:<{width}}  {key:<32} {outcome}  [{x.file}:{x.line}]")
    return "\n".join(lines)


def _meaning(failed: str | None) -> str | None:
    """What the one field that failed (`to: paths`) matches, from its declaration."""
    section, _, key = (failed or "").partition(": ")
    described = describe(section, key) if section in ("from", "to") else None
    # The first sentence: enough to read in a terminal; `authz schema` has the rest.
    return None if described is None else f"{key}: {described.split('. ', 1)[0].rstrip('.')}."
