"""Validating a file's `authentication` section: mTLS trust domains, JWT, API-key and
introspection providers.

Per-field checks that read the base directory (`jwks_file` is resolved against it, and is where
a check that the file exists belongs) are methods here, one per key source.
"""

from __future__ import annotations

import difflib
import json
import os.path
import re
from dataclasses import dataclass
from typing import Any

from authz.policy.language import patterns as pat
from authz.policy.language import sections as sec
from authz.policy.language import sections_introspection as introspection_sections
from authz.policy.language.check import Checker, kind_of
from authz.policy.language.keyfile import KEY_FILE_SUFFIXES
from authz.policy.language.kinds import NAME
from authz.policy.language.spec import (
    ApiKeyProvider,
    IntrospectionProvider,
    JwtProvider,
    TokenLocation,
)
from authz.policy.language.yaml_source import YMap, YNode, YScalar, to_plain


@dataclass(frozen=True, slots=True)
class Auth:
    """A file's `authentication`, checked (API-key providers not yet bound to their keys)."""

    trust_domains: tuple[str, ...] | None = None
    jwt_providers: tuple[JwtProvider, ...] = ()
    api_key_providers: tuple[ApiKeyProvider, ...] = ()
    api_key_lines: tuple[int, ...] = ()
    trust_domain_aliases: tuple[str, ...] = ()
    introspection_providers: tuple[IntrospectionProvider, ...] = ()
    introspection_lines: tuple[int, ...] = ()


# https, or http to this machine only: the client secret never crosses a network in clear.
_ENDPOINT = re.compile(r"(https://[^/\s?#]+|http://(127\.0\.0\.1|localhost|\[::1\])(:\d+)?)(/\S*)?")


class AuthChecker(Checker):
    def authentication(self, node: YNode) -> Auth:
        m = self.section(node, sec.AUTHENTICATION)
        if m is None:
            return Auth()
        trust_domains = None
        aliases: tuple[str, ...] = ()
        mtls = self.section(m.items["mtls"], sec.MTLS) if "mtls" in m.items else None
        if mtls is not None and "trust_domains" in mtls.items:
            trust_domains = self.str_list(
                mtls.items["trust_domains"], "trust_domains", _check_trust_domain
            )
        if mtls is not None and "trust_domain_aliases" in mtls.items:
            node_aliases = mtls.items["trust_domain_aliases"]
            aliases = self.str_list(node_aliases, "trust_domain_aliases", _check_trust_domain) or ()
            if "trust_domains" not in mtls.items:
                self.err(
                    node_aliases.line,
                    "trust_domain_aliases needs trust_domains: aliases are other names of them",
                )
        items = self.seq(m.items["jwt"], "jwt") if "jwt" in m.items else None
        providers = [self.provider(item) for item in items or ()]
        keys = self.seq(m.items["api_keys"], "api_keys") if "api_keys" in m.items else None
        api_keys = [(self.api_key_provider(item), item.line) for item in keys or ()]
        bound = [(p, line) for p, line in api_keys if p is not None]
        listed = (
            self.seq(m.items["introspection"], "introspection")
            if "introspection" in m.items
            else None
        )
        introspection = [(self.introspection_provider(item), item.line) for item in listed or ()]
        return Auth(
            trust_domains,
            tuple(p for p in providers if p is not None),
            tuple(p for p, _ in bound),
            tuple(line for _, line in bound),
            aliases,
            tuple(p for p, _ in introspection if p is not None),
            tuple(line for p, line in introspection if p is not None),
        )

    def introspection_provider(self, node: YNode) -> IntrospectionProvider | None:
        """An RFC 7662 provider; a relative `client_secret_file` is resolved against the
        policy file's directory (read by the service, never by validation: a missing secret is a
        lint finding, and the provider answers 503 until it is there)."""
        m = self.section(node, introspection_sections.INTROSPECTION_PROVIDER)
        if m is None:
            return None
        before = len(self.problems)
        name = self.required(m, "name", "an introspection provider needs a name", self.key_name)
        endpoint = self.required(
            m, "endpoint", "an introspection provider needs an endpoint", self.endpoint
        )
        issuer = self.required(
            m, "issuer", "an introspection provider needs an issuer", self.string
        )
        client_id = self.required(
            m, "client_id", "an introspection provider needs a client_id", self.string
        )
        values: dict[str, Any] = {}
        secrets = [k for k in ("client_secret_file", "client_secret_env") if k in m.items]
        if len(secrets) != 1:
            self.err(
                m.line,
                "an introspection provider needs exactly one of client_secret_file and "
                "client_secret_env (the secret is never written in a policy file)",
            )
        if "client_secret_file" in m.items:
            path = self.string(m.items["client_secret_file"], "client_secret_file")
            if path is not None:
                values["secret_file"] = os.path.normpath(
                    os.path.join(os.path.abspath(self.base_dir), path)
                )
        if "client_secret_env" in m.items:
            env = self.string(m.items["client_secret_env"], "client_secret_env")
            if env is not None and env.upper().startswith("AUTHZ_"):
                self.err(
                    m.items["client_secret_env"].line,
                    f"client_secret_env {env!r}: AUTHZ_* variables are the service's settings",
                )
            values["secret_env"] = env
        if "from" in m.items:
            values["locations"] = self.locations(m.items["from"])
        if "tokens" in m.items:
            tokens = self.string(m.items["tokens"], "tokens")
            if tokens not in (None, "opaque", "all"):
                self.err(m.items["tokens"].line, f"tokens {tokens!r}: use opaque or all")
            values["tokens"] = tokens
        if "audiences" in m.items:
            values["audiences"] = self.str_list(m.items["audiences"], "audiences") or ()
        if "timeout" in m.items:
            values["timeout"] = self.number(m.items["timeout"], "timeout", 0.0, 30.0)
        if "cache" in m.items:
            values.update(self.introspection_cache(m.items["cache"]))
        if "forward" in m.items:
            values["forward"] = self.boolean(m.items["forward"], "forward") is True
        if "claims_to_headers" in m.items:
            values["claims_to_headers"] = self.claims_to_headers(m.items["claims_to_headers"])
        if "certificate_bound" in m.items:
            bound = self.boolean(m.items["certificate_bound"], "certificate_bound")
            values["certificate_bound"] = bound is True
        if (
            len(self.problems) > before
            or name is None
            or endpoint is None
            or issuer is None
            or client_id is None
        ):
            return None
        return IntrospectionProvider(name, endpoint, issuer, client_id, **values)

    def endpoint(self, node: YNode, what: str) -> str | None:
        url = self.string(node, what)
        if url is not None and not _ENDPOINT.fullmatch(url):
            self.err(
                node.line,
                f"endpoint {url!r}: use https (http only to 127.0.0.1, localhost or [::1]: "
                "the client secret must not cross a network in clear)",
            )
            return None
        return url

    def introspection_cache(self, node: YNode) -> dict[str, Any]:
        m = self.section(node, introspection_sections.INTROSPECTION_CACHE)
        if m is None:
            return {}
        out: dict[str, Any] = {}
        if "max_ttl" in m.items:
            out["cache_ttl"] = self.number(m.items["max_ttl"], "max_ttl", 0.0, 86400.0)
        if "inactive_ttl" in m.items:
            out["inactive_ttl"] = self.number(
                m.items["inactive_ttl"], "inactive_ttl", 0.0, 3600.0, zero=True
            )
        if "entries" in m.items:
            out["cache_entries"] = self.whole(m.items["entries"], "entries", 1, 10**7)
        if "bytes" in m.items:
            out["cache_bytes"] = self.whole(m.items["bytes"], "bytes", 65536, 2**34)
        return {k: v for k, v in out.items() if v is not None}

    def number(
        self, node: YNode, what: str, low: float, high: float, *, zero: bool = False
    ) -> float | None:
        """A number of seconds in (low, high] ([low, high] with `zero`)."""
        value = node.value if isinstance(node, YScalar) else None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.err(node.line, f"{what} must be a number of seconds, not {kind_of(node)}")
            return None
        if not (low <= value if zero else low < value) or value > high:
            self.err(node.line, f"{what} {value} is out of range ({low:g} to {high:g})")
            return None
        return float(value)

    def whole(self, node: YNode, what: str, low: int, high: int) -> int | None:
        value = node.value if isinstance(node, YScalar) else None
        if isinstance(value, bool) or not isinstance(value, int):
            self.err(node.line, f"{what} must be a whole number, not {kind_of(node)}")
            return None
        if not low <= value <= high:
            self.err(node.line, f"{what} {value} is out of range ({low} to {high})")
            return None
        return value

    def api_key_provider(self, node: YNode) -> ApiKeyProvider | None:
        """A provider whose `keys_file` is resolved against the policy file's directory; the
        loader binds it to the key file's parsed keys."""
        m = self.section(node, sec.API_KEY_PROVIDER)
        if m is None:
            return None
        before = len(self.problems)
        name = self.required(m, "name", "an api_keys provider needs a name", self.key_name)
        locations = self.required(
            m, "from", "an api_keys provider needs `from`: where the key is", self.key_from
        )
        keys_file = self.required(
            m, "keys_file", "an api_keys provider needs a keys_file", self.keys_file
        )
        if len(self.problems) > before or name is None or not locations or keys_file is None:
            return None
        return ApiKeyProvider(name, locations, keys_file)

    def key_name(self, node: YNode, what: str) -> str | None:
        name = self.string(node, what)
        if name is not None and not NAME.fullmatch(name):
            self.err(node.line, f"api_keys name {name!r}: use letters, digits, '-', '_' and '.'")
            return None
        return name

    def key_from(self, node: YNode, _: str) -> tuple[TokenLocation, ...] | None:
        return self.locations(node)

    def keys_file(self, node: YNode, what: str) -> str | None:
        path = self.string(node, what)
        if path is None:
            return None
        if os.path.isabs(path) or ".." in path.replace("\\", "/").split("/"):
            self.err(node.line, f"keys_file {path!r}: a key file sits in the policy directory")
            return None
        if not path.endswith(KEY_FILE_SUFFIXES):
            self.err(
                node.line,
                f"keys_file {path!r}: a key file is named *.keys.yaml (never read as a policy)",
            )
            return None
        return os.path.normpath(os.path.join(os.path.abspath(self.base_dir), path))

    def provider(self, node: YNode) -> JwtProvider | None:
        m = self.section(node, sec.PROVIDER)
        if m is None:
            return None
        before = len(self.problems)
        issuer = self.required(m, "issuer", "a jwt provider needs an issuer", self.string)
        values: dict[str, Any] = self.key_source(m)
        if "audiences" in m.items:
            values["audiences"] = self.str_list(m.items["audiences"], "audiences") or ()
        if "from" in m.items:
            values["locations"] = self.locations(m.items["from"])
        if "forward" in m.items:
            values["forward"] = self.boolean(m.items["forward"], "forward") is True
        if "claims_to_headers" in m.items:
            values["claims_to_headers"] = self.claims_to_headers(m.items["claims_to_headers"])
        if "algorithms" in m.items:
            values["algorithms"] = (
                self.str_list(m.items["algorithms"], "algorithms", _check_algorithm) or ()
            )
        if "certificate_bound" in m.items:
            bound = self.boolean(m.items["certificate_bound"], "certificate_bound")
            values["certificate_bound"] = bound is True
        if len(self.problems) > before or issuer is None:
            return None
        return JwtProvider(issuer=issuer, **values)

    def key_source(self, m: YMap) -> dict[str, Any]:
        """Exactly one of jwks_uri, jwks_file, jwks and `discovery: true`, each checked."""
        discovery = "discovery" in m.items and bool(self.boolean(m.items["discovery"], "discovery"))
        sources = [k for k in sec.KEY_SOURCES[:-1] if k in m.items] + ["discovery"] * discovery
        if len(sources) != 1:
            self.err(
                m.line,
                "a jwt provider needs exactly one key source: jwks_uri, jwks_file, jwks or "
                f"discovery: true (got {', '.join(sources) or 'none'})",
            )
        out: dict[str, Any] = {"discovery": discovery}
        if "jwks_uri" in m.items:
            out["jwks_uri"] = self.jwks_uri(m.items["jwks_uri"])
        if "jwks_file" in m.items:
            out["jwks_file"] = self.jwks_file(m.items["jwks_file"])
        if "jwks" in m.items:
            out["jwks_json"] = self.inline_jwks(m.items["jwks"])
        return out

    def jwks_uri(self, node: YNode) -> str | None:
        uri = self.string(node, "jwks_uri")
        if uri is not None and not re.match(r"https?://[^/\s]+", uri):
            self.err(node.line, f"jwks_uri {uri!r} is not an http(s) URL")
        return uri

    def jwks_file(self, node: YNode) -> str | None:
        """The absolute path, resolved against the policy file's directory."""
        path = self.string(node, "jwks_file")
        if path is None:
            return None
        resolved = os.path.normpath(os.path.join(os.path.abspath(self.base_dir), path))
        self.local_files.append((resolved, node.line))
        return resolved

    def inline_jwks(self, node: YNode) -> str | None:
        if isinstance(node, YScalar) and isinstance(node.value, str):
            try:
                value = json.loads(node.value)
            except ValueError:
                self.err(node.line, "jwks: not valid JSON")
                return None
        elif isinstance(node, YMap):
            value = to_plain(node)
        else:
            self.err(node.line, f"jwks must be a JWKS mapping with `keys`, not {kind_of(node)}")
            return None
        keys = value.get("keys") if isinstance(value, dict) else None
        if not isinstance(keys, list) or not keys:
            self.err(node.line, "jwks must be a JWKS: a mapping with a non-empty `keys` list")
            return None
        try:
            return json.dumps(value, sort_keys=True)
        except (TypeError, ValueError):
            self.err(node.line, "jwks holds values that are not JSON")
            return None

    def claims_to_headers(self, node: YNode) -> tuple[tuple[str, str], ...]:
        cth = self.mapping(node, "claims_to_headers")
        out: list[tuple[str, str]] = []
        for claim, hnode in cth.items.items() if cth is not None else ():
            header = self.string(hnode, f"the header for claim {claim!r}")
            if header is None:
                continue
            try:
                out.append((claim, pat.check_header_name(header)))
            except ValueError as exc:
                self.err(hnode.line, f"claims_to_headers: {exc}")
        return tuple(out)

    def locations(self, node: YNode) -> tuple[TokenLocation, ...] | None:
        items = self.seq(node, "from")
        if items is None:
            return None
        out = [self.location(item) for item in items]
        return None if any(x is None for x in out) else tuple(x for x in out if x is not None)

    def location(self, node: YNode) -> TokenLocation | None:
        m = self.section(node, sec.TOKEN_LOCATION)
        if m is None:
            return None
        kinds = [k for k in sec.TOKEN_KINDS if k in m.items]
        if len(kinds) != 1:
            self.err(m.line, "a token location names exactly one of header, query or cookie")
            return None
        kind = kinds[0]
        value = self.string(m.items[kind], kind)
        if value is None:
            return None
        prefix = self.prefix(m, kind)
        if prefix is None:
            return None
        if kind == "query":
            return TokenLocation(query=value)
        if kind == "cookie":
            return TokenLocation(cookie=value)
        try:
            return TokenLocation(header=pat.check_header_name(value), prefix=prefix)
        except ValueError as exc:
            self.err(m.items[kind].line, str(exc))
            return None

    def prefix(self, m: YMap, kind: str) -> str | None:
        if "prefix" not in m.items:
            return ""
        p = m.items["prefix"]
        if kind != "header":
            self.err(p.line, "prefix is only for a header location")
            return None
        if not isinstance(p, YScalar) or not isinstance(p.value, str):
            self.err(p.line, "prefix must be a string")
            return None
        return p.value


def _check_trust_domain(td: str) -> str:
    if "/" in td or ":" in td or td != td.strip():
        raise ValueError(f"{td!r} is not a trust domain (a name like cluster.local)")
    return td.lower()


def _check_algorithm(alg: str) -> None:
    if alg.lower() == "none":
        raise ValueError("'none' is never accepted")
    if alg not in sec.KNOWN_ALGORITHMS:
        close = difflib.get_close_matches(alg, sorted(sec.KNOWN_ALGORITHMS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown algorithm {alg!r}{hint}")
