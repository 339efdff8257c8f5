"""Policy tests: `*_test.yaml` files of request/expectation cases, and running them.

```yaml
defaults:                       # optional: request fields every case starts from
  host: shop.example.com
cases:
  - name: the frontend reads an order
    request:
      method: GET
      path: /api/orders/42
      principal: spiffe://cluster.local/ns/shop/sa/frontend
      # also: host, headers: {name: value}, claims: {iss: ..., sub: ..., scope: ...},
      #       api_key: partners/acme-1, context: {key: value}, query: {name: value},
      #       introspection: {active: true, sub: ..., scope: ...} (an opaque token's answer),
      #       source_ip, port
    expect:
      decision: allow           # allow | deny
      status: 200               # optional
      reason: frontend-reads-orders   # optional: a rule name or a reason code
  - name: the 101st cart request in a minute is refused
    repeat: 101                 # optional: send the request this many times in one window
    request: {...}              #   (rate limits count them); `expect` is for the last one
    expect: {decision: deny, status: 429, reason: cart-per-user}
```

Test files are validated like policies: every problem is a `Problem` with file and line, and
all problems of all files are reported at once. The loader never reads them as policies.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from authz.authoring.scenario import Explanation, Scenario, explain_scenario
from authz.errors import PolicyError, Problem
from authz.limits import Limiter, LocalCounter
from authz.policy import PolicySet
from authz.policy.language.check import unique, unknown_field
from authz.policy.language.yaml_source import (
    YamlProblems,
    YMap,
    YNode,
    YScalar,
    YSeq,
    parse_yaml,
    to_plain,
)

TEST_SUFFIXES = ("_test.yaml", "_test.yml")

REQUEST_FIELDS = frozenset(
    {
        "method",
        "path",
        "host",
        "principal",
        "headers",
        "claims",
        "introspection",
        "certificate_thumbprint",
        "introspected_by",
        "api_key",
        "context",
        "query",
        "source_ip",
        "port",
    }
)
EXPECT_FIELDS = frozenset({"decision", "status", "reason"})
MAX_REPEAT = 100_000  # a case's requests are decided one by one: keep `authz test` quick


@dataclass(frozen=True, slots=True)
class Expectation:
    allowed: bool
    status: int | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class TestCase:
    __test__ = False  # not a pytest class, whatever its name

    name: str
    file: str
    line: int
    scenario: Scenario
    expect: Expectation
    repeat: int = 1


@dataclass(frozen=True, slots=True)
class CaseResult:
    case: TestCase
    explanation: Explanation
    failures: tuple[str, ...]  # empty when the case passed

    @property
    def passed(self) -> bool:
        return not self.failures


def find_test_files(directory: str) -> list[str]:
    """Every `*_test.yaml` / `*_test.yml` under `directory` (hidden names skipped), sorted."""
    found: list[str] = []
    for root, dirs, files in os.walk(directory, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(
            os.path.join(root, name)
            for name in files
            if name.endswith(TEST_SUFFIXES) and not name.startswith(".")
        )
    return sorted(found)


def load_cases(paths: list[str]) -> list[TestCase]:
    """Parse test files; raise PolicyError with every problem of every file."""
    cases: list[TestCase] = []
    problems: list[Problem] = []
    for path in paths:
        try:
            with open(path, "rb") as fh:
                text = Problem.decoded(path, fh.read())
        except OSError as exc:
            text = Problem(path, 0, f"cannot read: {exc.strerror or exc}")
        if isinstance(text, Problem):
            problems.append(text)
            continue
        found, wrong = parse_cases(path, text)
        cases.extend(found)
        problems.extend(wrong)
    if problems:
        raise PolicyError(problems)
    return cases


def parse_cases(file: str, text: str) -> tuple[list[TestCase], list[Problem]]:
    """The cases of one test file and every problem found in it (no cases when any)."""
    try:
        root = parse_yaml(file, text)
    except YamlProblems as exc:
        return [], list(exc.problems)
    p = _Parser(file)
    cases = p.document(root)
    return ([], p.problems) if p.problems else (cases, [])


def run_cases(policy_set: PolicySet, cases: list[TestCase]) -> list[CaseResult]:
    """Decide every case against `policy_set` and compare with what it expects."""
    results: list[CaseResult] = []
    for case in cases:
        # A fresh counter per case, one instant for all its requests: one window.
        now = time.time()
        limiter = Limiter(LocalCounter(), clock=lambda now=now: now)  # type: ignore[misc]
        for _ in range(case.repeat):
            explanation = explain_scenario(policy_set, case.scenario, now, limiter)
        results.append(CaseResult(case, explanation, _compare(case.expect, explanation)))
    return results


def _compare(expect: Expectation, explanation: Explanation) -> tuple[str, ...]:
    """One message naming everything the case expected and everything that came."""
    d = explanation.decision
    wrong = (
        d.allowed != expect.allowed
        or (expect.status is not None and d.status != expect.status)
        or (expect.reason is not None and d.reason != expect.reason)
    )
    if not wrong:
        return ()
    wanted = ["allow" if expect.allowed else "deny"]
    if expect.status is not None:
        wanted.append(str(expect.status))
    if expect.reason is not None:
        wanted.append(expect.reason)
    got = f"{'allow' if d.allowed else 'deny'} {d.status} {d.reason}"
    return (f"expected {' '.join(wanted)}, got {got}",)


class _Parser:
    def __init__(self, file: str):
        self.file = file
        self.problems: list[Problem] = []

    def err(self, line: int, message: str) -> None:
        self.problems.append(Problem(self.file, line, message))

    def mapping(self, node: YNode | None, what: str) -> YMap | None:
        if not isinstance(node, YMap):
            self.err(node.line if node is not None else 1, f"{what} must be a mapping")
            return None
        return node

    def unknown(self, m: YMap, allowed: frozenset[str], what: str) -> None:
        for key, line in m.key_lines.items():
            if key not in allowed:
                self.err(line, unknown_field(key, allowed, what))

    def document(self, root: YNode | None) -> list[TestCase]:
        doc = self.mapping(root, "a test file")
        if doc is None:
            return []
        self.unknown(doc, frozenset({"defaults", "cases"}), "a test file")
        defaults: dict[str, YNode] = {}
        if "defaults" in doc.items:
            d = self.mapping(doc.items["defaults"], "defaults")
            if d is not None:
                self.unknown(d, REQUEST_FIELDS, "defaults")
                defaults = dict(d.items)
        cases_node = doc.items.get("cases")
        if not isinstance(cases_node, YSeq) or not cases_node.items:
            self.err(
                cases_node.line if cases_node is not None else doc.line,
                "`cases` must be a non-empty list",
            )
            return []
        return unique((self.case(item, defaults) for item in cases_node.items), self.err, "case")

    def case(self, node: YNode, defaults: Mapping[str, YNode]) -> TestCase | None:
        m = self.mapping(node, "a case")
        if m is None:
            return None
        self.unknown(m, frozenset({"name", "repeat", "request", "expect"}), "a case")
        before = len(self.problems)
        name = self.text(m.items.get("name"), "name", m.line)
        request = self.mapping(m.items.get("request") or YScalar(m.line, None), "request")
        fields = dict(defaults)
        if request is not None:
            self.unknown(request, REQUEST_FIELDS, "request")
            fields.update(request.items)
        scenario = self.scenario(fields, m.line)
        expect = self.expectation(m.items.get("expect"), m.line)
        repeat = 1
        if "repeat" in m.items:
            r = m.items["repeat"]
            if (
                not isinstance(r, YScalar)
                or not isinstance(r.value, int)
                or isinstance(r.value, bool)
                or not 1 <= r.value <= MAX_REPEAT
            ):
                self.err(r.line, f"repeat must be a number from 1 to {MAX_REPEAT}")
            else:
                repeat = r.value
        if len(self.problems) > before or name is None or scenario is None or expect is None:
            return None
        return TestCase(name, self.file, m.line, scenario, expect, repeat)

    def text(self, node: YNode | None, what: str, line: int) -> str | None:
        if node is None:
            self.err(line, f"missing `{what}`")
            return None
        if not isinstance(node, YScalar) or not isinstance(node.value, str) or not node.value:
            self.err(node.line, f"{what} must be a non-empty string")
            return None
        return node.value

    def optional_text(self, fields: Mapping[str, YNode], key: str) -> str | None:
        node = fields.get(key)
        return None if node is None else self.text(node, key, node.line)

    def scenario(self, fields: Mapping[str, YNode], line: int) -> Scenario | None:
        method = self.text(fields.get("method"), "request.method", line)
        path = self.text(fields.get("path"), "request.path", line)
        host = self.text(fields.get("host"), "request.host (or defaults.host)", line)
        principal = self.optional_text(fields, "principal")
        source_ip = self.optional_text(fields, "source_ip")
        headers: dict[str, str] = {}
        if "headers" in fields:
            h = self.mapping(fields["headers"], "headers")
            for key, value in h.items.items() if h is not None else ():
                if (
                    not isinstance(value, YScalar)
                    or not isinstance(value.value, (str, int, float))
                    or isinstance(value.value, bool)
                ):
                    self.err(value.line, f"header {key!r}: the value must be a string")
                    continue
                headers[key.lower()] = str(value.value)
        claims: dict[str, Any] | None = None
        if "claims" in fields:
            c = self.mapping(fields["claims"], "claims")
            if c is not None:
                claims = to_plain(c)
                for key in ("iss", "sub"):
                    claim = claims.get(key) if claims is not None else None
                    if not isinstance(claim, str) or not claim:
                        self.err(
                            c.line, f"claims stand for a verified JWT: they need an `{key}` string"
                        )
        introspection: dict[str, Any] | None = None
        if "introspection" in fields:
            answer = self.mapping(fields["introspection"], "introspection")
            if answer is not None:
                introspection = to_plain(answer)
                if not isinstance(introspection.get("active"), bool):
                    self.err(
                        answer.line, "introspection is an RFC 7662 answer: `active: true|false`"
                    )
        api_key = self.optional_text(fields, "api_key")
        if api_key is not None and api_key.count("/") != 1:
            self.err(fields["api_key"].line, "api_key names a key as <provider>/<id>")
        context = self.strings(fields, "context")
        query: list[tuple[str, str]] = []
        if "query" in fields:
            q = self.mapping(fields["query"], "query")
            for key, value in q.items.items() if q is not None else ():
                values = value.items if isinstance(value, YSeq) else (value,)
                for v in values:
                    if not isinstance(v, YScalar) or not isinstance(v.value, str):
                        self.err(v.line, f"query {key!r}: a value is a string")
                    else:
                        query.append((key, v.value))
        port: int | None = None
        if "port" in fields:
            p = fields["port"]
            if (
                not isinstance(p, YScalar)
                or not isinstance(p.value, int)
                or isinstance(p.value, bool)
                or not 0 < p.value < 65536
            ):
                self.err(p.line, "port must be a number from 1 to 65535")
            else:
                port = p.value
        if method is None or path is None or host is None:
            return None
        if query:
            path += ("&" if "?" in path else "?") + urlencode(query)
        return Scenario(
            method,
            path,
            host,
            principal,
            headers,
            claims,
            source_ip,
            port,
            api_key=api_key,
            context=context,
            introspection=introspection,
            certificate_thumbprint=self.optional_text(fields, "certificate_thumbprint"),
            introspected_by=self.optional_text(fields, "introspected_by"),
        )

    def strings(self, fields: Mapping[str, YNode], key: str) -> dict[str, str]:
        """A mapping of strings (`context`), problems for anything else."""
        out: dict[str, str] = {}
        if key in fields:
            m = self.mapping(fields[key], key)
            for name, value in m.items.items() if m is not None else ():
                if not isinstance(value, YScalar) or not isinstance(value.value, str):
                    self.err(value.line, f"{key} {name!r}: the value must be a string")
                else:
                    out[name] = value.value
        return out

    def expectation(self, node: YNode | None, line: int) -> Expectation | None:
        if node is None:
            self.err(line, "missing `expect`")
            return None
        m = self.mapping(node, "expect")
        if m is None:
            return None
        self.unknown(m, EXPECT_FIELDS, "expect")
        decision = m.items.get("decision")
        if not isinstance(decision, YScalar) or decision.value not in ("allow", "deny"):
            self.err(
                decision.line if decision is not None else m.line,
                "expect.decision must be allow or deny",
            )
            return None
        status: int | None = None
        if "status" in m.items:
            s = m.items["status"]
            if (
                not isinstance(s, YScalar)
                or not isinstance(s.value, int)
                or isinstance(s.value, bool)
            ):
                self.err(s.line, "expect.status must be an HTTP status number")
            else:
                status = s.value
        reason = self.optional_text(m.items, "reason")
        return Expectation(decision.value == "allow", status, reason)
