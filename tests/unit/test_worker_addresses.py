"""`--workers N`: each worker's derived addresses, and collisions refused before starting."""

from __future__ import annotations

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


def test_two_listen_addresses_that_meet_are_refused() -> None:
    settings = Settings(listen=("127.0.0.1:9191", "127.0.0.1:9193"), workers=3)
    with pytest.raises(
        ConfigError, match=r"127\.0\.0\.1:9193 would be used by worker 0's --listen"
    ):
        check_worker_addresses(settings)


def test_a_derived_port_over_65535_is_refused() -> None:
    with pytest.raises(ConfigError, match="the port is over 65535"):
        check_worker_addresses(Settings(listen=("127.0.0.1:65535",), workers=2))
