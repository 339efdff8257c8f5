"""Hostile properties of the second batch of the language (issue 17).

- Path captures: however a path is spelled (escapes of unreserved characters in either case,
  `//`, dot segments, `./`), the capture binds the decoded segment of the normalized path, so
  no spelling makes `/tenants/{tenant}` bind a tenant the request does not really address.
- API keys: a key header smuggled twice (Envoy's raw header_map with repeated entries, or one
  value joined with ",") is refused unless every copy is the same key; one good copy beside a
  bad one never counts.
"""

from __future__ import annotations

from types import MappingProxyType

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authz._proto.envoy.service.auth.v3.external_auth_pb2 import CheckRequest
from authz.config import Limits
from authz.errors import ApiKeyRejected, InvalidPath
from authz.identity.apikeys import find_api_key, key_hash
from authz.policy.language.patterns import PathCaptures
from authz.policy.language.spec import ApiKey, ApiKeyProvider, TokenLocation
from authz.request.paths import normalize_path
from authz.wire.inbound import to_request
from tests.hostile._hyp import HOSTILE

CAPTURES = PathCaptures(["/tenants/{tenant}/{**}"])
_SEGMENT_CHARS = "abcdeACME019-._~"


@st.composite
def _spelled(draw: st.DrawFn, text: str) -> str:
    """`text` with each character maybe percent-encoded, in upper or lower case hex."""
    out = []
    for ch in text:
        if draw(st.booleans()):
            code = f"%{ord(ch):02X}"
            out.append(code if draw(st.booleans()) else code.lower())
        else:
            out.append(ch)
    return "".join(out)


@st.composite
def _path_for(draw: st.DrawFn, tenant: str) -> str:
    """A hostile spelling of `/tenants/<tenant>/orders`."""
    prefix = draw(st.sampled_from(["", "/.", "/x/..", "/", "/./x/.."]))
    sep = draw(st.sampled_from(["/", "//", "/./", "/y/../"]))
    return f"{prefix}/{draw(_spelled('tenants'))}{sep}{draw(_spelled(tenant))}{sep}orders"


@HOSTILE
@given(
    st.text(_SEGMENT_CHARS, min_size=1, max_size=8).filter(lambda t: t not in (".", "..")),
    st.data(),
)
def test_no_spelling_changes_what_a_capture_binds(tenant: str, data: st.DataObject) -> None:
    spelled = data.draw(_path_for(tenant))
    try:
        path, _ = normalize_path(spelled)
    except InvalidPath:
        return  # refused with 400: nothing is bound at all
    assert CAPTURES.capture(path) == {"tenant": tenant}, (spelled, path)


@HOSTILE
@given(st.data())
def test_another_tenant_never_binds_as_acme(data: st.DataObject) -> None:
    other = data.draw(
        st.text(_SEGMENT_CHARS, min_size=1, max_size=6).filter(
            lambda t: t not in ("acme", ".", "..")
        )
    )
    try:
        path, _ = normalize_path(data.draw(_path_for(other)))
    except InvalidPath:
        return
    assert CAPTURES.capture(path) != {"tenant": "acme"}


GOOD = "good-key-0123456789"
PROVIDER = ApiKeyProvider(
    "partners",
    (TokenLocation(header="x-api-key"),),
    "/p/partners.keys.yaml",
    MappingProxyType({key_hash(GOOD): ApiKey("acme-1", key_hash(GOOD))}),
)
_VALUES = st.sampled_from([GOOD, "bad-key", GOOD.upper(), f" {GOOD}", "", f"{GOOD}x"])


def _check_request(values: list[str], raw: bool) -> CheckRequest:
    message = CheckRequest()
    http = message.attributes.request.http
    http.method, http.path, http.host = "GET", "/", "h.example"
    if raw:
        for value in values:
            entry = http.header_map.headers.add()
            entry.key, entry.raw_value = "x-api-key", value.encode()
    else:
        http.headers["x-api-key"] = ",".join(values)
    return message


@HOSTILE
@given(st.lists(_VALUES, min_size=1, max_size=4), st.booleans())
def test_a_key_header_smuggled_twice_is_refused(values: list[str], raw: bool) -> None:
    request = to_request(_check_request(values, raw), Limits())
    distinct = {v.strip() for v in values}
    if distinct == {GOOD}:
        found = find_api_key(request, [PROVIDER])
        assert found is not None and found.principal == "partners/acme-1"
        return
    with pytest.raises(ApiKeyRejected):
        find_api_key(request, [PROVIDER])
