"""The HTTP-mode Envoy bootstrap's pure parts (envoy --mode validate is in tests/e2e)."""

from __future__ import annotations

import re

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from authz.addresses import Address as Endpoint
from authz.addresses import AddressError
from authz.envoy_bootstrap import BootstrapOptions
from authz.envoy_http import (
    HTTP_BOOTSTRAP_NOTES,
    TRANSPORT_HEADERS,
    any_header_but,
    http_bootstrap,
)
from authz.envoy_yaml import render_yaml
from authz.wire.http import ENVOY_PATH_HEADER

PATTERNS = [re.compile(regex) for regex in any_header_but(TRANSPORT_HEADERS)]


def goes_upstream(name: str) -> bool:
    return any(p.fullmatch(name) for p in PATTERNS)


NAME_CHARS = "abcdeghiklnorstvxy-:"  # the letters of the excluded names, and more


@given(st.text(alphabet=NAME_CHARS, min_size=1, max_size=24) | st.sampled_from(TRANSPORT_HEADERS))
def test_every_header_but_the_transport_ones_goes_upstream(name: str) -> None:
    expected = name not in TRANSPORT_HEADERS and not name.startswith(":")
    assert goes_upstream(name) is expected


def test_identity_and_claim_headers_go_upstream_transport_headers_do_not() -> None:
    for name in ("x-authz-principal", "x-user-id", "cookie", "user", "content", "dates"):
        assert goes_upstream(name), name
    for name in ("content-length", "date", "server", ":status"):
        assert not goes_upstream(name), name


def test_the_filter_sends_the_undecoded_path_and_fails_closed() -> None:
    config = http_bootstrap(BootstrapOptions(), path_prefix="/check")
    listener = config["static_resources"]["listeners"][0]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    ext = hcm["http_filters"][0]["typed_config"]
    assert ext["failure_mode_allow"] is False
    service = ext["http_service"]
    assert service["path_prefix"] == "/check"
    assert service["authorization_request"]["headers_to_add"] == [
        {"key": ENVOY_PATH_HEADER, "value": "%REQ(:PATH)%"},
        # The client's address as the gRPC door sees it, and the request's own content-length.
        {
            "key": "x-authz-client-address",
            "value": "%DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT%",
        },
        {"key": "x-authz-original-content-length", "value": "%REQ(CONTENT-LENGTH)%"},
        {"key": "x-authz-original-scheme", "value": "%REQ(:SCHEME)%"},
    ]
    authz = next(c for c in config["static_resources"]["clusters"] if c["name"] == "authz")
    assert "typed_extension_protocol_options" not in authz  # HTTP/1.1, not gRPC's HTTP/2
    assert "health_checks" not in authz


def test_rendered_yaml_round_trips_with_notes() -> None:
    config = http_bootstrap(BootstrapOptions())
    text = render_yaml(config, HTTP_BOOTSTRAP_NOTES)
    assert yaml.safe_load(text) == config
    assert "# The undecoded :path" in text


def test_readyz_health_checks_use_each_endpoints_admin_port() -> None:
    two = BootstrapOptions(authz=(Endpoint("127.0.0.1", 9292), Endpoint("127.0.0.1", 9293)))
    config = http_bootstrap(two, readyz_ports=(9092, 9093))
    (cluster,) = [c for c in config["static_resources"]["clusters"] if c["name"] == "authz"]
    ports = [
        e["endpoint"]["health_check_config"]["port_value"]
        for e in cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    ]
    assert ports == [9092, 9093]
    assert cluster["health_checks"][0]["http_health_check"] == {"path": "/readyz"}
    unchecked = http_bootstrap(two)
    assert all("health_checks" not in c for c in unchecked["static_resources"]["clusters"])
    with pytest.raises(AddressError, match="readiness ports"):
        http_bootstrap(two, readyz_ports=(9092,))
    with pytest.raises(AddressError, match="unix socket"):
        http_bootstrap(
            BootstrapOptions(authz=(Endpoint(unix_path="/run/a.sock"),)), readyz_ports=(9092,)
        )
