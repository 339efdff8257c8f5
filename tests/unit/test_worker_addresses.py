"""`--workers N`: each worker's derived addresses, and collisions refused before starting."""

from __future__ import annotations

from pathlib import Path

import pytest

from authz.config import Settings
from authz.errors import ConfigError
from authz.workers import check_worker_addresses, for_worker


def test_worker_addresses_are_port_plus_index() -> None:
    settings = Settings(
        listen=("127.0.0.1:9191", "unix:/run/a.sock"), admin="127.0.0.1:9292", workers=3
    )
    two = for_worker(settings, 2)
    assert two.listen == ("127.0.0.1:9193", "unix:/run/a.2.sock")
    assert two.admin == "127.0.0.1:9294"
    check_worker_addresses(settings)  # no collision


def test_a_derived_grpc_port_on_an_admin_port_is_refused() -> None:
    settings = Settings(listen=("127.0.0.1:9191",), admin="127.0.0.1:9192", workers=2)
    with pytest.raises(ConfigError) as caught:
        check_worker_addresses(settings)
    assert "127.0.0.1:9192 would be used by worker 0's --admin and worker 1's --listen" in str(
        caught.value
    )


def test_two_spellings_of_one_address_meet() -> None:
    """`:9192` is `0.0.0.0:9192` (issue 25.4): worker 1's gRPC port on the admin port."""
    settings = Settings(listen=(":9191",), admin="0.0.0.0:9192", workers=2)
    with pytest.raises(ConfigError, match=r":9192 would be used by worker 0's --admin"):
        check_worker_addresses(settings)


def test_two_listen_addresses_that_meet_are_refused() -> None:
    settings = Settings(listen=("127.0.0.1:9191", "127.0.0.1:9193"), workers=3)
    with pytest.raises(
        ConfigError, match=r"127\.0\.0\.1:9193 would be used by worker 0's --listen"
    ):
        check_worker_addresses(settings)


def test_a_derived_port_over_65535_is_refused() -> None:
    with pytest.raises(ConfigError, match="the port is over 65535"):
        check_worker_addresses(Settings(listen=("127.0.0.1:65535",), workers=2))


def test_http_addresses_are_derived_and_checked_like_grpc_ones() -> None:
    settings = Settings(
        listen=("127.0.0.1:9191",), http_listen=("127.0.0.1:9292", "unix:/run/h.sock"), workers=2
    )
    assert for_worker(settings, 1).http_listen == ("127.0.0.1:9293", "unix:/run/h.1.sock")
    check_worker_addresses(settings)
    clash = Settings(listen=("127.0.0.1:9191",), http_listen=("127.0.0.1:9192",), workers=2)
    with pytest.raises(
        ConfigError,
        match=r"127\.0\.0\.1:9192 would be used by worker 0's --http-listen and "
        r"worker 1's --listen",
    ):
        check_worker_addresses(clash)


def test_one_process_cannot_serve_grpc_and_http_on_one_address() -> None:
    same = Settings(listen=("127.0.0.1:9191",), http_listen=("127.0.0.1:9191",))
    with pytest.raises(
        ConfigError, match=r"would be used by --listen 127\.0\.0\.1:9191 and --http"
    ):
        check_worker_addresses(same)
    # HTTP only: the gRPC address is not bound, so it collides with nothing.
    check_worker_addresses(
        Settings(grpc=False, listen=("127.0.0.1:9191",), http_listen=("127.0.0.1:9191",))
    )


def test_the_readme_says_which_socket_worker_0_keeps() -> None:
    """README's --workers row: an operator points Envoy at each worker's socket by name."""
    settings = Settings(listen=("unix:/x.sock",), workers=2)
    zero, one = for_worker(settings, 0).listen, for_worker(settings, 1).listen
    assert (zero, one) == (("unix:/x.sock",), ("unix:/x.1.sock",))
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    (row,) = [line for line in readme.splitlines() if line.startswith("| `--workers N` |")]
    assert "`unix:/x.sock` → `/x.i.sock`; worker 0 keeps `/x.sock`" in row
