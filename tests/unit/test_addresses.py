"""authz.addresses: the one parser of `host:port`, `[v6]:port` and `unix:/path`."""

from __future__ import annotations

import pytest

from authz.addresses import Address, AddressError, bindable, parse, reachable, shifted


def test_parse() -> None:
    assert parse("0.0.0.0:9092") == Address("0.0.0.0", 9092)
    assert parse("[::1]:80") == Address("::1", 80)
    assert parse("authz:9191") == Address("authz", 9191)
    assert parse("unix:/run/a.sock") == Address(unix_path="/run/a.sock")
    assert parse("127.0.0.1:0", port_zero=True).port == 0
    # Every interface, as `--addr :9191` means to OPA and the README's examples to us.
    assert parse(":9191") == Address("0.0.0.0", 9191)
    assert bindable(":9191") == "0.0.0.0:9191" and bindable("unix:/a.sock") == "unix:/a.sock"
    assert reachable(":9191") == "127.0.0.1:9191" and reachable("h:1") == "h:1"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("localhost", "is not HOST:PORT"),
        (":", "the port '' is not a number"),
        ("h:x", "is not a number"),
        ("h:0", "out of range (1-65535)"),
        ("h:65536", "out of range (1-65535)"),
        ("::1:80", "in brackets"),
        ("[nope]:80", "is not an IPv6 address"),
        ("bad_host!:80", "is not a host name"),
        ("unix:", "needs a path"),
    ],
)
def test_parse_rejects(text: str, expected: str) -> None:
    with pytest.raises(AddressError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        parse(text)


def test_unix_only_where_allowed() -> None:
    with pytest.raises(AddressError, match="unix socket is not supported here"):
        parse("unix:/x.sock", allow_unix=False)


def test_str_round_trips() -> None:
    for text in ("127.0.0.1:9191", "[::1]:9191", "authz:1", "unix:/run/a.sock"):
        assert str(parse(text)) == text


def test_shifted() -> None:
    assert shifted("[::1]:9191", 2) == "[::1]:9193"
    assert shifted("unix:/run/authz.sock", 1) == "unix:/run/authz.1.sock"
    assert shifted("h:65535", 1) == "h:65536"  # parse() then refuses it
