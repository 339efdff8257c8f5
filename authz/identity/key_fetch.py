"""Loading one JWT provider's JWKS: inline, from a file, over HTTP(S) or by OIDC discovery.

Runs only on a key source's background thread (authz.identity.keys). Every read is bounded in
size and, over the network, in time; only http(s) URIs and redirects are followed.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from authz.identity.jwks import JwksError, KeySet, parse_jwks
from authz.policy.language.spec import JwtProvider

__all__ = ["Fetcher", "describe"]


class Fetcher:
    """How to load one source's JWKS document (runs only on the background thread)."""

    def __init__(self, provider: JwtProvider, timeout: float, max_bytes: int) -> None:
        self._provider = provider
        self._timeout = timeout
        self._max_bytes = max_bytes

    def load(self) -> KeySet:
        provider = self._provider
        if provider.jwks_json is not None:
            return parse_jwks(provider.jwks_json)
        if provider.jwks_file is not None:
            with open(provider.jwks_file, "rb") as handle:
                data = handle.read(self._max_bytes + 1)
            if len(data) > self._max_bytes:
                raise JwksError(f"file larger than {self._max_bytes} bytes")
            return parse_jwks(data)
        uri = provider.jwks_uri
        if uri is None and provider.discovery:
            uri = self.discover()
        if uri is None:
            raise JwksError("provider has no key source")
        return parse_jwks(self._get(uri))

    def discover(self) -> str:
        """The issuer's `jwks_uri`, from its OpenID configuration (also used by the export)."""
        # OpenID Connect Discovery 1.0 section 4: the configuration lives at the issuer with
        # "/.well-known/openid-configuration" appended (any trailing "/" removed first), and
        # section 4.3: its "issuer" MUST be identical to the issuer it was fetched for.
        issuer = self._provider.issuer
        document = _json_object(self._get(issuer.rstrip("/") + "/.well-known/openid-configuration"))
        if document.get("issuer") != issuer:
            raise JwksError(f"discovery document names issuer {document.get('issuer')!r}")
        uri = document.get("jwks_uri")
        if not isinstance(uri, str) or not uri:
            raise JwksError("discovery document has no jwks_uri")
        return uri

    def _get(self, uri: str) -> bytes:
        scheme = urllib.parse.urlsplit(uri).scheme.lower()
        if scheme not in ("https", "http"):
            # urllib would happily read file:// or ftp://; a key URI is only ever HTTP(S).
            raise JwksError(f"unsupported URI scheme {scheme!r}")
        deadline = time.monotonic() + self._timeout
        request = urllib.request.Request(uri, headers={"Accept": "application/json"})
        # `timeout` bounds each socket operation; the deadline below bounds the whole body, so
        # a server that trickles one byte a second cannot hold the fetcher forever.
        with _OPENER.open(request, timeout=self._timeout) as response:
            chunks: list[bytes] = []
            size = 0
            while True:
                chunk = response.read(64 * 1024)
                if not chunk:
                    break
                size += len(chunk)
                if size > self._max_bytes:
                    raise JwksError(f"response larger than {self._max_bytes} bytes")
                if time.monotonic() > deadline:
                    raise JwksError(f"response took longer than {self._timeout:g} s")
                chunks.append(chunk)
        return b"".join(chunks)


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects only to http(s): urllib would also follow one to ftp://."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        if urllib.parse.urlsplit(newurl).scheme.lower() not in ("https", "http"):
            raise JwksError("redirected to a non-HTTP URI")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_HttpOnlyRedirects)


def _json_object(data: bytes) -> dict[str, object]:
    try:
        value = json.loads(data)
    except (ValueError, RecursionError) as error:
        raise JwksError(f"not JSON: {error}") from error
    if not isinstance(value, dict):
        raise JwksError("not a JSON object")
    return value


def describe(error: BaseException) -> str:
    """A fetch failure in a few words, for the log and the key state."""
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code}"
    if isinstance(error, urllib.error.URLError):
        return f"fetch failed: {error.reason}"
    if isinstance(error, TimeoutError):
        return "fetch timed out"
    if isinstance(error, JwksError):
        return str(error)
    return f"{type(error).__name__}: {error}"
