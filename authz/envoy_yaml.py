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
        "The service judges a request under the policy of its host with the port and one\n"
        "trailing dot removed. Envoy must route on that same host: otherwise\n"
        "`Host: shop.example.com:8080` or `shop.example.com.` misses the shop.example.com\n"
        "virtual host, is routed by another one (a catch-all, another upstream) and is still\n"
        "judged under shop.example.com's policy. Stripping here makes routing and policy agree."
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
    text = yaml.dump(
        document, Dumper=_NoAliases, sort_keys=False, default_flow_style=False, width=4096
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
