"""Which clients `--tls-allowed-client` lets in, and which TLS settings fit together."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from authz.config import Settings
from authz.config_file import load_settings
from authz.errors import ConfigError
from authz.tls.clients import ClientAllowList, entry_problem
from authz.tls.plan import ADMIN, GRPC, HTTP, tls_plan

ENVOY = "spiffe://cluster.local/ns/mesh/sa/envoy"


@pytest.mark.parametrize(
    ("entries", "uris", "dns", "allowed"),
    [
        ((ENVOY,), [ENVOY], [], True),
        ((ENVOY,), ["spiffe://CLUSTER.local/ns/mesh/sa/envoy"], [], True),  # domain folds
        ((ENVOY,), ["spiffe://cluster.local/ns/mesh/sa/Envoy"], [], False),  # path does not
        ((ENVOY,), [ENVOY, "spiffe://cluster.local/ns/x/sa/y"], [], False),  # two URI SANs
        ((ENVOY,), ["spiffe://cluster.local/ns/mesh/sa/envoy-2"], [], False),
        (("spiffe://cluster.local/ns/mesh/*",), ["spiffe://cluster.local/ns/mesh/sa/x"], [], True),
        (
            ("spiffe://cluster.local/ns/mesh/*",),
            ["spiffe://cluster.local/ns/meshy/sa/x"],
            [],
            False,
        ),
        ((ENVOY,), [], ["envoy"], False),
        (("envoy.mesh.svc",), [], ["other", "Envoy.Mesh.Svc."], True),
        (("*.mesh.svc",), [], ["a.b.mesh.svc"], True),
        (("*.mesh.svc",), [], ["mesh.svc"], False),
        (("*.mesh.svc",), [], ["evilmesh.svc"], False),
        (("envoy.mesh.svc",), ["spiffe://envoy.mesh.svc/x"], [], False),  # a URI is no DNS name
    ],
)
def test_allowed_clients(
    entries: tuple[str, ...], uris: list[str], dns: list[str], allowed: bool
) -> None:
    assert ClientAllowList(entries).permits(uris, dns) is allowed


@pytest.mark.parametrize(
    "entry", ["spiffe://", "spiffe:///x", "spiffe://td/*/x", "a..b", "*", "h:1", ""]
)
def test_unusable_entries(entry: str) -> None:
    assert entry_problem(entry) is not None
    with pytest.raises(ValueError):
        ClientAllowList((entry,))


def settings(**values: object) -> Settings:
    return dataclasses.replace(Settings(), **values)  # type: ignore[arg-type]


def test_one_pair_serves_every_listener_and_each_may_have_its_own() -> None:
    shared = settings(
        tls_cert="s.pem", tls_key="s-key.pem", tls_client_ca="ca.pem",
        http_listen=("127.0.0.1:9292",), admin="127.0.0.1:9090",
    )  # fmt: skip
    plan = tls_plan(shared)
    assert set(plan) == {GRPC, HTTP, ADMIN}
    assert plan[GRPC].files.client_ca == plan[HTTP].files.client_ca == "ca.pem"
    assert plan[ADMIN].files.client_ca is None  # probes present no certificate
    own = tls_plan(dataclasses.replace(shared, http_tls_cert="h.pem", http_tls_key="h-key.pem"))
    assert own[HTTP].files.cert == "h.pem" and own[GRPC].files.cert == "s.pem"
    plain = tls_plan(dataclasses.replace(shared, admin_plaintext=True, http_plaintext=True))
    assert set(plain) == {GRPC}
    assert tls_plan(settings()) == {}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"tls_cert": "c.pem"}, "--tls-key is missing"),
        ({"http_tls_key": "k.pem"}, "--http-tls-cert is missing"),
        ({"tls_client_ca": "ca.pem"}, "needs a certificate"),
        ({"tls_cert": "c", "tls_key": "k", "tls_allowed_clients": (ENVOY,)}, "--tls-client-ca"),
        (
            {"tls_cert": "c", "tls_key": "k", "tls_client_ca": "ca",
             "tls_allowed_clients": (ENVOY,), "http_listen": ("127.0.0.1:9292",)},
            "cannot be enforced by the HTTP door",
        ),
        ({"http_tls_client_ca": "ca", "http_listen": ("127.0.0.1:9292",)}, "needs the HTTP door"),
        ({"admin_plaintext": True, "admin_tls_cert": "c", "admin_tls_key": "k"}, "contradict"),
        ({"admin_tls_client_ca": "ca", "admin": "127.0.0.1:9090"}, "needs the admin endpoint"),
    ],
)  # fmt: skip
def test_settings_that_do_not_fit(values: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        tls_plan(settings(**values))


def test_allowed_clients_with_a_dedicated_http_ca() -> None:
    plan = tls_plan(
        settings(
            tls_cert="c", tls_key="k", tls_client_ca="ca", tls_allowed_clients=(ENVOY,),
            http_listen=("127.0.0.1:9292",), http_tls_client_ca="http-ca",
        )
    )  # fmt: skip
    assert plan[GRPC].allowed is not None and plan[HTTP].allowed is None
    assert plan[HTTP].files.client_ca == "http-ca"


def test_the_config_file_example_in_the_docs_loads(tmp_path: Path) -> None:
    text = (Path(__file__).resolve().parents[3] / "docs" / "operations.md").read_text()
    example = text.split("# authz serve --config authz.yaml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "authz.yaml").write_text(example)
    loaded = load_settings(str(tmp_path / "authz.yaml"), check_paths=False)
    plan = tls_plan(
        dataclasses.replace(loaded, http_listen=("127.0.0.1:9292",), admin="127.0.0.1:9090")
    )
    assert set(plan) == {GRPC, HTTP}  # the admin endpoint stays plaintext
    assert plan[GRPC].allowed is not None and plan[HTTP].files.client_ca.endswith("envoy-ca.crt")
