"""Envoy configuration as YAML people read: `render_yaml` puts a comment above the first line
setting each key (`BOOTSTRAP_NOTES`: why each deliberate choice), because a dict cannot carry
them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

# Comments placed above the first line that sets each key, by `render_yaml`.
BOOTSTRAP_NOTES: Mapping[str, str] = {
    "admin": "Envoy's admin API: keep it on loopback, it can change Envoy's state.",
    "use_remote_address": (
        "Envoy is the edge: the client address is the connection's peer, not a client-sent\n"
        "x-forwarded-for (the service's ip_blocks rules read that address)."
    ),
    "normalize_path": (
        "Path normalization happens in Envoy, before ext_authz, and the normalized path is also\n"
        "what the upstream receives: the service and the upstream see the same path, so\n"
        "/public/../admin cannot be checked as one thing and served as another (RFC 3986 5.2.4)."
    ),
    "merge_slashes": "For the same reason: //admin is checked and served as /admin.",
    "path_with_escaped_slashes_action": (
        "%2F and %5C are ambiguous (one segment or two?) and upstreams disagree; the policy\n"
        "language rejects them too (invalid_path). Reject here, before anything reads them."
    ),
    "strip_any_host_port": (
        "The service judges a request under the policy of its host with the port removed\n"
        "(and refuses a host still ending in a dot). Envoy must route on that same host:\n"
        "otherwise `Host: shop.example.com:8080` or `shop.example.com.` misses the\n"
        "shop.example.com virtual host, is routed by another one (a catch-all, another\n"
        "upstream) and is still judged under shop.example.com's policy. Stripping here makes\n"
        "routing and policy agree."
    ),
    "strip_trailing_host_dot": "For the same reason: shop.example.com. routes as shop.example.com.",
    "headers_with_underscores_action": (
        "Some upstreams (CGI, nginx) read x_user_id as x-user-id; rejecting underscores keeps a\n"
        "client from smuggling a header the service strips."
    ),
    "failure_mode_allow": "Fail closed: if the service cannot answer, nothing gets through.",
    "status_on_error": (
        "An outage answers 503, so it is never mistaken for a policy deny (403) in logs or by "
        "clients."
    ),
    "include_peer_certificate": (
        "Send the verified client certificate, so the service can read its SAN itself."
    ),
    "forward_client_cert_details": (
        "Drop any client-sent x-forwarded-client-cert: only Envoy's own TLS view counts."
    ),
    "typed_extension_protocol_options": "gRPC needs HTTP/2 to the service.",
    "overload_manager": "Caps open client connections (Envoy warns when there is no cap).",
    "health_checks": (
        "gRPC health: the service reports NOT_SERVING while starting or draining, and Envoy\n"
        "routes around that endpoint."
    ),
    "typed_per_filter_config": (
        "Per-route context (ExtAuthzPerRoute.check_settings.context_extensions): every check\n"
        "of this route carries these entries; a policy reads them with\n"
        "`when: [{context: KEY, equals: VALUE}]`. Set them on any route or virtual host."
    ),
    "access_log": (
        "The decision id links each request to the service's decision log entry; reason is the\n"
        "rule name or reason code."
    ),
}


# libyaml's emitter when PyYAML has it: ten times faster on a 1,000-rule export.
_Dumper: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class _NoAliases(_Dumper):  # type: ignore[misc]
    """Writes a value shared by several keys in full each time (no `&id001` anchors): the
    exported filters share sub-matchers, and people read this output."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def render_yaml(document: Any, notes: Mapping[str, str] | None = None, header: str = "") -> str:
    """YAML text for `document`, with `notes[key]` as a comment above the first line setting key."""
    try:
        events: list[yaml.Event] | None = _events(document)
    except _NotPlain:
        events = None  # PyYAML's representer, for what only it knows how to write
    text = (
        yaml.emit(events, Dumper=_Dumper, width=4096)
        if events is not None
        else yaml.dump(
            document, Dumper=_NoAliases, sort_keys=False, default_flow_style=False, width=4096
        )
    )
    pending = dict(notes or {})
    out: list[str] = [f"# {line}".rstrip() for line in header.splitlines()] if header else []
    for line in text.splitlines():
        stripped = line.lstrip(" -")
        key = stripped.split(":", 1)[0] if ":" in stripped else ""
        if key in pending:
            indent = " " * (len(line) - len(line.lstrip(" ")))
            for note_line in pending.pop(key).splitlines():
                out.append(f"{indent}# {note_line}")
        out.append(line)
    return "\n".join(out) + "\n"


class _NotPlain(Exception):
    """A value that is not a dict, list, str, int, float, bool or None."""


_SCALARS = (str, int, float, bool, type(None))
_MAP, _SEQ = "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"


def _events(document: Any) -> list[yaml.Event]:
    """The events `yaml.dump(document, Dumper=_NoAliases, sort_keys=False,
    default_flow_style=False)` sends its emitter, made without PyYAML's representer: a 1,000-rule
    export is ~200,000 nodes, and building and resolving each in Python took 0.8 s of the
    1 s its YAML cost. Each scalar is still represented and resolved by PyYAML (a string once:
    the same keys and matchers recur); tests/unit/test_envoy_yaml.py compares the two."""
    representer = yaml.representer.SafeRepresenter()
    resolver: Any = yaml.resolver.Resolver()  # untyped in PyYAML's stubs
    strings: dict[str, yaml.ScalarEvent] = {}
    out: list[yaml.Event] = [yaml.StreamStartEvent(), yaml.DocumentStartEvent(explicit=False)]

    def scalar(value: Any) -> yaml.ScalarEvent:
        if type(value) not in _SCALARS:
            raise _NotPlain
        node = representer.represent_data(value)
        detected = resolver.resolve(yaml.ScalarNode, node.value, (True, False))
        default = resolver.resolve(yaml.ScalarNode, node.value, (False, True))
        implicit = (node.tag == detected, node.tag == default)
        return yaml.ScalarEvent(None, node.tag, implicit, node.value, style=None)

    def walk(value: Any) -> None:
        kind = type(value)
        if kind is dict:
            out.append(yaml.MappingStartEvent(None, _MAP, True, flow_style=False))
            for key, item in value.items():
                walk(key)
                walk(item)
            out.append(yaml.MappingEndEvent())
        elif kind is list:
            out.append(yaml.SequenceStartEvent(None, _SEQ, True, flow_style=False))
            for item in value:
                walk(item)
            out.append(yaml.SequenceEndEvent())
        elif kind is str:
            event = strings.get(value)
            if event is None:
                event = strings[value] = scalar(value)
            out.append(event)
        else:
            out.append(scalar(value))

    walk(document)
    out += [yaml.DocumentEndEvent(explicit=False), yaml.StreamEndEvent()]
    return out
