"""The value patterns of docs/policy.md, parsed once and matched many times.

Each `parse_*` function checks one pattern and raises `ValueError` with a message fit for a
policy author; the schema uses them to validate, the compiler to build the matchers below.
Every matcher keeps exact values in a frozenset, so a long list of exact values costs one
hash lookup.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote

from authz.errors import InvalidPath
from authz.request.hosts import LABEL as _LABEL

# The request grammar lives in authz.request, below both the wire and the policy language;
# the policy's own checks use it through these names.
from authz.request.hosts import normalize_host as normalize_host
from authz.request.methods import check_method as check_method
from authz.request.paths import normalize_path
from authz.request.syntax import SPIFFE_PREFIX, TOKEN

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


# --- plain strings with Istio's `*` forms -------------------------------------------------


@dataclass(frozen=True, slots=True)
class StringPatterns:
    """Exact values, `prefix*`, `*suffix` and `*` (any value at all)."""

    exact: frozenset[str] = frozenset()
    prefixes: tuple[str, ...] = ()
    suffixes: tuple[str, ...] = ()
    any: bool = False

    def matches(self, value: str | None) -> bool:
        """True when `value` is present and matches one pattern."""
        if value is None:
            return False
        if self.any or value in self.exact:
            return True
        return any(value.startswith(p) for p in self.prefixes) or any(
            value.endswith(s) for s in self.suffixes
        )


def check_star_pattern(pattern: str) -> None:
    """A `*` may only be the whole pattern, its first or its last character."""
    if not pattern:
        raise ValueError("empty pattern")
    if pattern != "*" and "*" in pattern[1:-1]:
        raise ValueError(f"{pattern!r}: '*' may only lead or trail the pattern")
    if len(pattern) > 1 and pattern[0] == "*" and pattern[-1] == "*":
        raise ValueError(f"{pattern!r}: '*' may lead or trail the pattern, not both")


def string_patterns(patterns: Iterable[str]) -> StringPatterns:
    """Build a matcher from patterns already checked with `check_star_pattern`."""
    exact: set[str] = set()
    prefixes: list[str] = []
    suffixes: list[str] = []
    any_ = False
    for p in patterns:
        if p == "*":
            any_ = True
        elif p.startswith("*"):
            suffixes.append(p[1:])
        elif p.endswith("*"):
            prefixes.append(p[:-1])
        else:
            exact.add(p)
    return StringPatterns(frozenset(exact), tuple(prefixes), tuple(suffixes), any_)


def principal_patterns(patterns: Iterable[str]) -> StringPatterns:
    """Principal patterns, matched against the workload's full principal.

    As in Istio, a pattern without a scheme is the short form of a SPIFFE ID: the exact value
    `td/ns/x/sa/y` and the prefix `td/ns/x/*` stand for `spiffe://td/ns/x/sa/y` and
    `spiffe://td/ns/x/*`, so they match only SPIFFE IDs, never a peer whose principal is the
    bare text `td/ns/x/sa/y` (issue 10.3). `*suffix` and `*` are plain string patterns.
    """
    return string_patterns(_spiffe_form(p) for p in patterns)


def _spiffe_form(pattern: str) -> str:
    if pattern.startswith(("*", SPIFFE_PREFIX)):
        return pattern
    return SPIFFE_PREFIX + pattern


# --- paths ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PathPatterns:
    """Exact paths, `{*}`/`{**}` templates (one regex) and Istio's `prefix*`/`*suffix`/`*`."""

    exact: frozenset[str] = frozenset()
    prefixes: tuple[str, ...] = ()
    suffixes: tuple[str, ...] = ()
    template: re.Pattern[str] | None = None
    any: bool = False

    def matches(self, path: str) -> bool:
        if self.any or path in self.exact:
            return True
        if any(path.startswith(p) for p in self.prefixes) or any(
            path.endswith(s) for s in self.suffixes
        ):
            return True
        return self.template is not None and self.template.fullmatch(path) is not None


def check_path_pattern(pattern: str) -> None:
    """Raise ValueError unless `pattern` is a valid path pattern in normal form."""
    if pattern == "*":
        return
    check_star_pattern(pattern.replace("{**}", "").replace("{*}", "") or "/")
    if pattern.startswith("*"):
        if "{" in pattern:
            raise ValueError(f"{pattern!r}: '{{*}}' and '{{**}}' cannot be mixed with a '*suffix'")
        return
    if not pattern.startswith("/"):
        raise ValueError(f"{pattern!r}: a path pattern starts with '/' (or is '*' or '*suffix')")
    body = pattern[:-1] if pattern.endswith("*") else pattern
    segments = body.split("/")
    names: set[str] = set()
    for i, seg in enumerate(segments):
        capture = _CAPTURE.fullmatch(seg)
        if capture is not None and seg not in ("{*}", "{**}"):
            if capture[1] in names:
                raise ValueError(f"{pattern!r}: the capture {seg} is bound twice")
            names.add(capture[1])
            if pattern.endswith("*") and i == len(segments) - 1:
                raise ValueError(f"{pattern!r}: a template cannot end with a '*' prefix")
        elif seg in ("{*}", "{**}"):
            if seg == "{**}" and i != len(segments) - 1:
                raise ValueError(f"{pattern!r}: '{{**}}' may only be the last segment")
            if pattern.endswith("*") and i == len(segments) - 1:
                raise ValueError(f"{pattern!r}: a template cannot end with a '*' prefix")
        elif "{" in seg or "}" in seg:
            raise ValueError(
                f"{pattern!r}: '{{*}}', '{{**}}' and captures '{{name}}' must be whole segments"
                " (a capture name is lower-case letters, digits and '_')"
            )
    try:
        normal, _query = normalize_path(_CAPTURE_ANY.sub("{*}", body))
    except InvalidPath as exc:
        raise ValueError(f"{pattern!r}: {exc}") from None
    if "?" in body or "#" in body:
        raise ValueError(f"{pattern!r}: a path pattern has no query or fragment")
    if normal != _CAPTURE_ANY.sub("{*}", body):
        raise ValueError(
            f"{pattern!r}: not in normal form (paths are normalized before matching); "
            f"did you mean {normal + ('*' if pattern.endswith('*') else '')!r}?"
        )


def path_patterns(patterns: Iterable[str]) -> PathPatterns:
    """Build a matcher from patterns already checked with `check_path_pattern`."""
    plain: list[str] = []  # exact paths and Istio's `*` forms: as for any string
    prefixes: list[str] = []
    regexes: list[str] = []
    for p in patterns:
        if p.startswith("*") or p.endswith("*") or "{" not in p:
            plain.append(p)
        elif p.endswith("/{**}") and "{" not in p[:-5]:
            # "/api/{**}" is the prefix "/api/": no regex to compile (a big set has thousands)
            prefixes.append(p[:-4])
        else:
            regexes.append(_template_regex(p))
    strings = string_patterns(plain)
    template = re.compile("|".join(f"(?:{r})" for r in regexes)) if regexes else None
    return PathPatterns(
        strings.exact, strings.prefixes + tuple(prefixes), strings.suffixes, template, strings.any
    )


def _template_regex(pattern: str, groups: bool = False) -> str:
    parts: list[str] = []
    for seg in pattern.split("/")[1:]:
        capture = _CAPTURE.fullmatch(seg)
        if capture is not None and seg != "{**}":
            # `{name}` matches like `{*}`; only the capture matcher names the group.
            named = groups and seg != "{*}"
            parts.append(f"(?P<{capture[1]}>[^/]+)" if named else "[^/]+")
        elif seg == "{**}":
            # zero or more segments: "/api/{**}" matches "/api/", "/api/a", "/api/a/b"
            parts.append(".*")
        else:
            parts.append(re.escape(seg))
    return "/" + "/".join(parts)


# `{*}` and a capture `{name}` (its name as group 1); `{**}` is told apart by the callers.
_CAPTURE = re.compile(r"\{([a-z_][a-z0-9_]*|\*)\}")
_CAPTURE_ANY = re.compile(r"\{[a-z_][a-z0-9_]*\}")


def path_captures(pattern: str) -> frozenset[str]:
    """The capture names a path pattern binds: `/t/{tenant}/{**}` binds `tenant`."""
    if pattern.startswith("*"):
        return frozenset()
    return frozenset(m[0][1:-1] for m in _CAPTURE_ANY.finditer(pattern))


class PathCaptures:
    """Captures of paths, for `equals_capture`: built only for rules that use one, so a rule
    without captures pays nothing. `capture` gives the segments bound by the first pattern
    (in the order written) that matches, each decoded (`%20` -> space), or None when none
    matches or a segment does not decode as UTF-8."""

    __slots__ = ("_regexes",)

    def __init__(self, patterns: Iterable[str]):
        self._regexes = tuple(
            re.compile(_template_regex(p, groups=True)) for p in patterns if path_captures(p)
        )

    def capture(self, path: str) -> dict[str, str] | None:
        for regex in self._regexes:
            match = regex.fullmatch(path)
            if match is not None:
                try:
                    return {k: unquote(v, errors="strict") for k, v in match.groupdict().items()}
                except UnicodeDecodeError:
                    return None
        return None


def path_first_segment(pattern: str) -> str | None:
    """The first path segment every path matching `pattern` has; None when it can vary."""
    if pattern.startswith("*"):
        return None
    body = pattern[1:]
    if pattern.endswith("*"):
        # "/api*" may match "/apix/..."; only a prefix that closes its first segment pins it.
        if "/" not in body[:-1]:
            return None
        body = body[:-1]
    first = body.split("/", 1)[0]
    if first == "{**}" or _CAPTURE.fullmatch(first):
        return None
    return first


def request_first_segment(path: str) -> str:
    """The first segment of a normalized request path (`""` for `/`)."""
    return path[1:].split("/", 1)[0]


# --- hosts ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HostPatterns:
    """Exact host names and `*.suffix` patterns (one or more labels), lower-case."""

    exact: frozenset[str] = frozenset()
    suffixes: tuple[str, ...] = ()  # ".example.com" for "*.example.com"

    def matches(self, host: str) -> bool:
        return host in self.exact or any(
            host.endswith(s) and len(host) > len(s) for s in self.suffixes
        )


def check_host_pattern(pattern: str) -> str:
    """Return the lower-cased pattern; raise ValueError unless exact or `*.suffix`."""
    host = pattern.lower()
    body = host[2:] if host.startswith("*.") else host
    if host == "*":
        raise ValueError("'*' is not a host pattern: omit `hosts` to apply to every host")
    if ":" in body:
        raise ValueError(f"{pattern!r}: hosts are matched without the port")
    if not body or not all(_LABEL.fullmatch(label) for label in body.split(".")):
        raise ValueError(f"{pattern!r}: not a host name or '*.suffix' pattern")
    return host


def host_patterns(patterns: Iterable[str]) -> HostPatterns:
    exact: set[str] = set()
    suffixes: list[str] = []
    for p in patterns:
        if p.startswith("*."):
            suffixes.append(p[1:])
        else:
            exact.add(p)
    return HostPatterns(frozenset(exact), tuple(suffixes))


# --- CIDRs, methods, ports ------------------------------------------------------------------


def parse_ip_block(block: str) -> IPNetwork:
    """A single IP or a CIDR, v4 or v6; host bits must be zero (`10.0.0.1/8` is a mistake)."""
    try:
        return ipaddress.ip_network(block.strip(), strict=True)
    except ValueError as exc:
        raise ValueError(f"{block!r}: not an IP address or CIDR ({exc})") from None


@dataclass(frozen=True, slots=True)
class IPBlocks:
    """Networks grouped by IP version; an IPv4-mapped v6 address also matches v4 blocks."""

    v4: tuple[ipaddress.IPv4Network, ...] = ()
    v6: tuple[ipaddress.IPv6Network, ...] = ()

    def matches(self, ip: IPAddress | None) -> bool:
        if ip is None:
            return False
        if isinstance(ip, ipaddress.IPv6Address):
            if any(ip in n for n in self.v6):
                return True
            mapped = ip.ipv4_mapped
            return mapped is not None and any(mapped in n for n in self.v4)
        return any(ip in n for n in self.v4)


def ip_blocks(networks: Iterable[IPNetwork]) -> IPBlocks:
    v4: list[ipaddress.IPv4Network] = []
    v6: list[ipaddress.IPv6Network] = []
    for n in networks:
        if isinstance(n, ipaddress.IPv4Network):
            v4.append(n)
        else:
            v6.append(n)
    return IPBlocks(tuple(v4), tuple(v6))


def check_header_name(name: str) -> str:
    """Return the lower-cased header name; raise ValueError unless an HTTP token."""
    if not TOKEN.fullmatch(name) and not (name.startswith(":") and TOKEN.fullmatch(name[1:])):
        raise ValueError(f"{name!r} is not a header name")
    return name.lower()
