"""The policy engine: files -> compiled, indexed policy set -> decisions.

Public API (other layers code against exactly these names):
`load_policy_set(directory) -> PolicySet`, `PolicySet` (`.revision`, `.rule_count`,
`.for_host(host) -> HostPolicy | None`, `.jwt_providers`, `.rules`), `HostPolicy`
(`.authentication`, `.rules`, `.candidates(method, path)`), `evaluate(host_policy, request,
identity) -> Decision`, `no_policy_decision()`, `PolicyStore`.

Layout (a layer imports only the ones before it): `language/` (the file format, read and
checked), `decide/` (what runs per request: compiled set, index, rules, evaluate), `load/`
(files -> the set in force, off the request path).
"""

from __future__ import annotations

from authz.policy.decide.compiler import HostPolicy, PolicySet, compile_policy_set
from authz.policy.decide.evaluate import (
    NO_MATCHING_RULE,
    NO_POLICY_FOR_HOST,
    evaluate,
    no_policy_decision,
)
from authz.policy.decide.rules import CompiledRule
from authz.policy.load.loader import build_policy_set, load_policy_set
from authz.policy.load.store import PolicyStore

__all__ = [
    "NO_MATCHING_RULE",
    "NO_POLICY_FOR_HOST",
    "CompiledRule",
    "HostPolicy",
    "PolicySet",
    "PolicyStore",
    "build_policy_set",
    "compile_policy_set",
    "evaluate",
    "load_policy_set",
    "no_policy_decision",
]
