"""The policy file format: one file's YAML -> typed, frozen spec (docs/policy.md, "Policy files").

Every problem becomes a `Problem` naming the file and the line of the offending node, and all
problems of a file are collected (an author fixes them in one round, not one per reload).
Checks that need the whole set (duplicate rule names, undefined roles) live in the compiler.
This module is pure: the loader hands it text. Validation is split by section:
`validate_auth` (authentication), `validate_rules` (rules, roles, entries, conditions), both
walking the declarations in `fields`, `conditions` and `sections`.
"""

from __future__ import annotations

from authz.errors import Problem
from authz.policy.language import patterns as pat
from authz.policy.language import sections as sec
from authz.policy.language.check import unique
from authz.policy.language.kinds import NAME as _NAME
from authz.policy.language.limits_spec import read_rate_limit
from authz.policy.language.sections import ACTIONS, KNOWN_ALGORITHMS, RESERVED_NAMES
from authz.policy.language.spec import (
    ConditionSpec,
    FileSpec,
    FromSpec,
    RateLimitSpec,
    RoleSpec,
    RuleSpec,
    ToSpec,
)
from authz.policy.language.validate_auth import Auth, AuthChecker
from authz.policy.language.validate_rules import RuleChecker
from authz.policy.language.yaml_source import YamlProblems, YNode, parse_yaml

__all__ = [
    "ACTIONS",
    "KNOWN_ALGORITHMS",
    "RESERVED_NAMES",
    "_NAME",
    "ConditionSpec",
    "FileSpec",
    "FromSpec",
    "RoleSpec",
    "RuleSpec",
    "ToSpec",
    "parse_file",
]


def parse_file(file: str, text: str, base_dir: str = ".") -> FileSpec | list[Problem]:
    """Validate one policy file; return its spec, or every problem found.

    `base_dir` is the file's directory, against which `jwks_file` paths are resolved.
    """
    try:
        root = parse_yaml(file, text)
    except YamlProblems as exc:
        return exc.problems
    return validate_tree(file, root, base_dir)


def validate_tree(file: str, root: YNode | None, base_dir: str = ".") -> FileSpec | list[Problem]:
    """`parse_file` for a document already parsed with `parse_yaml` (None: empty)."""
    spec, problems = validate_partly(file, root, base_dir)
    return problems if problems or spec is None else spec


def validate_partly(
    file: str, root: YNode | None, base_dir: str = "."
) -> tuple[FileSpec | None, list[Problem]]:
    """The file's problems, and the spec of what validated (None when nothing could). With
    problems, the spec only serves to report the set's problems too (an undefined role, a rule
    name used twice) in the same pass: a rule with a problem is kept by name with its valid
    `to` entries, and a role with one by name, without entries, so that its uses are not
    reported as undefined."""
    if root is None:
        return None, [Problem(file, 1, "the file is empty")]
    v = _Validator(file, base_dir)
    spec = v.file_spec(root)
    return spec, v.problems


class _Validator(AuthChecker, RuleChecker):
    def file_spec(self, root: YNode) -> FileSpec | None:
        doc = self.section(root, sec.FILE)
        if doc is None:
            return None
        hosts = None
        if "hosts" in doc.items:
            hosts = self.str_list(doc.items["hosts"], "hosts", pat.check_host_pattern)
        auth = Auth()
        if "authentication" in doc.items:
            auth = self.authentication(doc.items["authentication"])
        roles = self.roles(doc.items["roles"]) if "roles" in doc.items else ()
        rules = self.rules(doc.items["rules"]) if "rules" in doc.items else ()
        limits = (
            self.rate_limits(doc.items["rate_limits"], rules) if "rate_limits" in doc.items else ()
        )
        return FileSpec(
            self.file,
            hosts,
            auth.trust_domains,
            auth.jwt_providers,
            roles,
            rules,
            api_key_providers=auth.api_key_providers,
            api_key_lines=auth.api_key_lines,
            trust_domain_aliases=auth.trust_domain_aliases,
            local_files=tuple(self.local_files),
            rate_limits=limits,
            introspection_providers=auth.introspection_providers,
            introspection_lines=auth.introspection_lines,
        )

    def roles(self, node: YNode) -> tuple[RoleSpec, ...]:
        roles_node = self.mapping(node, "roles")
        if roles_node is None:
            return ()
        return tuple(
            self.role(name, roles_node.key_lines[name], item)
            # A role with a problem (the spec is then only for `validate_partly`): named.
            or RoleSpec(name, self.file, roles_node.key_lines[name], ())
            for name, item in roles_node.items.items()
        )

    def rules(self, node: YNode) -> tuple[RuleSpec, ...]:
        items = self.seq(node, "rules") or ()
        return tuple(unique((self.rule(item) for item in items), self.err, "rule"))

    def rate_limits(self, node: YNode, rules: tuple[RuleSpec, ...]) -> tuple[RateLimitSpec, ...]:
        """The limits, their names unique with the rules' (both are a decision's reason)."""
        items = self.seq(node, "rate_limits") or ()
        limits = [read_rate_limit(self, item) for item in items]
        named: list[RuleSpec | RateLimitSpec | None] = [*rules, *limits]
        return tuple(x for x in unique(named, self.err, "rule") if isinstance(x, RateLimitSpec))
