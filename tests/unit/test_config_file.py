"""Config file, environment and flags: precedence, conversion and clear errors."""

from __future__ import annotations

import textwrap
from dataclasses import fields
from pathlib import Path

import pytest

from authz.commands import serve
from authz.config import Entry, Limits, Settings, settings_table
from authz.config_file import env_name, load_settings
from authz.errors import ConfigError

FULL = """\
listen: ["0.0.0.0:9191", "unix:/run/authz.sock"]
admin: 127.0.0.1:9092
policies: {policies}
decision_log: "-"
log_headers: [User-Agent, x-request-id]
headers:
  principal: X-Principal
  request_principal: x-user
  decision_id: x-decision
trust_xfcc: true
ca_bundle: {ca}
jwt_authn_metadata: envoy.filters.http.jwt_authn
limits: {{max_headers: 10, max_header_bytes: 2048, max_path_bytes: 512}}
workers: 2
watch: false
poll_policies: true
log_level: debug
"""


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "policies").mkdir()
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    return tmp_path


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "authz.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return str(path)


def error_of(*args: object, **kwargs: object) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(*args, **kwargs)  # type: ignore[arg-type]
    return str(caught.value)


def test_the_store_password_variable_is_not_an_unknown_setting() -> None:
    environ = {"AUTHZ_RATE_LIMIT_STORE_PASSWORD": "s3cret", "AUTHZ_RATE_LIMIT_STORE": "redis://r/0"}
    settings = load_settings(environ=environ, check_paths=False)
    assert settings.rate_limit_store == "redis://r/0"
    assert "s3cret" not in repr(settings)


def test_rate_limit_store_urls_are_checked() -> None:
    ok = ("memory", "redis://redis:6379/0", "rediss://cache.internal:6380/2", "unix:///run/r.sock")
    ok += ("redis+cluster://a:7000,b:7001", "redis+sentinel://s1:26379,s2:26379/authz")
    for url in ok:
        assert load_settings(flags={"rate_limit_store": url}, check_paths=False)
    for bad in ("http://redis:6379", "redis://:6379/0", "redis://r:6379/x", "redis://r:99999/0"):
        assert "rate_limit_store" in error_of(flags={"rate_limit_store": bad}, check_paths=False)
    # The cluster and Sentinel forms say what is missing.
    error = error_of(flags={"rate_limit_store": "redis+sentinel://s1:26379"}, check_paths=False)
    assert "name the master" in error


def test_defaults_without_any_source() -> None:
    assert load_settings(check_paths=False) == Settings()


def test_every_key_of_the_file(tree: Path) -> None:
    path = write(tree, FULL.format(policies=tree / "policies", ca=tree / "ca.pem"))
    s = load_settings(path)
    assert s.listen == ("0.0.0.0:9191", "unix:/run/authz.sock")
    assert s.admin == "127.0.0.1:9092"
    assert s.policies == str(tree / "policies")
    assert s.decision_log == "-"
    assert s.log_headers == ("user-agent", "x-request-id")
    assert (s.headers.principal, s.headers.request_principal, s.headers.decision_id) == (
        "x-principal",
        "x-user",
        "x-decision",
    )
    assert s.trust_xfcc is True and s.ca_bundle == str(tree / "ca.pem")
    assert s.jwt_authn_metadata == "envoy.filters.http.jwt_authn"
    assert (s.limits.max_headers, s.limits.max_header_bytes, s.limits.max_path_bytes) == (
        10,
        2048,
        512,
    )
    assert (s.workers, s.watch, s.poll_policies, s.log_level) == (2, False, True, "debug")


def test_precedence_flags_over_env_over_file(tree: Path) -> None:
    path = write(
        tree, "listen: 127.0.0.1:1001\nworkers: 2\nadmin: 127.0.0.1:2001\nlog_level: warning\n"
    )
    env = {"AUTHZ_LISTEN": "127.0.0.1:1002, 127.0.0.1:1003", "AUTHZ_WORKERS": "3"}
    flags = {"listen": ["127.0.0.1:1004"], "admin": None}
    s = load_settings(path, environ=env, flags=flags, check_paths=False)
    assert s.listen == ("127.0.0.1:1004",)  # flag
    assert s.workers == 3  # env over file
    assert s.admin == "127.0.0.1:2001"  # file: the flag was not given
    assert s.log_level == "warning"
    assert load_settings(path, environ=env, check_paths=False).listen == (
        "127.0.0.1:1002",
        "127.0.0.1:1003",
    )


def test_environment_conversions_and_config_path(tree: Path) -> None:
    path = write(tree, "admin: 127.0.0.1:2001\n")
    env = {
        "AUTHZ_CONFIG": path,
        "AUTHZ_TRUST_XFCC": "yes",
        "AUTHZ_LIMITS_MAX_HEADERS": "7",
        "AUTHZ_HEADERS_PRINCIPAL": "x-p",
        "AUTHZ_LOG_HEADERS": "a,b",
        "AUTHZ_DECISION_LOG": "",  # empty: off
        # Kubernetes service links for a Service named "authz": ignored, not errors.
        "AUTHZ_PORT": "tcp://10.0.0.1:9191",
        "AUTHZ_SERVICE_HOST": "10.0.0.1",
    }
    s = load_settings(environ=env, check_paths=False)
    assert s.admin == "127.0.0.1:2001" and s.trust_xfcc is True
    assert s.limits.max_headers == 7 and s.headers.principal == "x-p"
    assert s.log_headers == ("a", "b") and s.decision_log is None
    assert env_name("limits.max_header_bytes") == "AUTHZ_LIMITS_MAX_HEADER_BYTES"


def test_every_limit_is_a_config_key_and_an_environment_variable(tree: Path) -> None:
    # Declared once, in authz.config.Limits: a new limit is configurable without another list.
    names = [limit.name for limit in fields(Limits)]
    assert {"max_principal_bytes", "max_certificate_bytes", "max_host_bytes"} <= set(names)
    path = write(tree, "limits: {max_principal_bytes: 100, max_metadata_depth: 3}\n")
    env = {"AUTHZ_LIMITS_MAX_HOST_BYTES": "200", "AUTHZ_LIMITS_MAX_HEADER_VALUE_BYTES": "300"}
    s = load_settings(path, environ=env, check_paths=False)
    assert (s.limits.max_principal_bytes, s.limits.max_metadata_depth) == (100, 3)
    assert (s.limits.max_host_bytes, s.limits.max_header_value_bytes) == (200, 300)
    assert s.limits.max_certificate_bytes == Limits().max_certificate_bytes
    with pytest.raises(ConfigError, match=r"limits\.max_method_bytes"):
        load_settings(environ={"AUTHZ_LIMITS_MAX_METHOD_BYTES": "0"}, check_paths=False)


def test_unknown_keys_suggest_the_close_one(tree: Path) -> None:
    path = write(tree, "polices: x\nlimits:\n  max_header: 3\nfoo: 1\n")
    message = error_of(path, check_paths=False)
    assert f"{path}:1: unknown key 'polices'; did you mean 'policies'?" in message
    assert f"{path}:3: unknown key 'limits.max_header'; did you mean 'max_headers'?" in message
    assert f"{path}:4: unknown key 'foo'" in message and "foo'; did you mean" not in message


def test_wrong_types_name_file_line_and_key(tree: Path) -> None:
    path = write(
        tree, "workers: two\ntrust_xfcc: 'yes'\nlimits: 5\nlisten: [1]\nmax: null\nlimits2: {}\n"
    )
    message = error_of(path, check_paths=False)
    assert f"{path}:1: workers: expected an integer, got str 'two'" in message
    assert f"{path}:2: trust_xfcc: expected true or false" in message
    assert f"{path}:3: limits: expected a mapping" in message
    assert f"{path}:4: listen: expected a non-empty string, got int 1" in message


def test_booleans_are_not_integers(tree: Path) -> None:
    path = write(tree, "workers: true\n")
    assert "workers: expected an integer, got a boolean (true)" in error_of(path, check_paths=False)


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:70000", "out of range (1-65535)"),
        ("127.0.0.1:0", "out of range (1-65535)"),
        ("127.0.0.1", "is not HOST:PORT"),
        ("127.0.0.1:http", "is not a number"),
        ("::1:80", "in brackets"),
        ("[nope]:80", "is not an IPv6 address"),
        ("bad_host!:80", "is not a host name"),
        ("unix:/x.sock", "unix socket is not supported here"),
    ],
)
def test_bad_admin_addresses(tree: Path, address: str, expected: str) -> None:
    path = write(tree, f"admin: '{address}'\n")
    message = error_of(path, check_paths=False)
    assert f"{path}:1: admin: " in message and expected in message


def test_good_listen_addresses() -> None:
    flags = {"listen": ["[::]:9191", "unix:/tmp/a.sock", "localhost:1", "0.0.0.0:65535"]}
    assert len(load_settings(flags=flags, check_paths=False).listen) == 4


def test_values_from_env_and_flags_are_checked_too() -> None:
    message = error_of(
        environ={"AUTHZ_WORKERS": "0", "AUTHZ_TRUST_XFCC": "maybe"},
        flags={"listen": ["127.0.0.1:99999"]},
        check_paths=False,
    )
    assert "AUTHZ_WORKERS: workers: must be at least 1, got 0" in message
    assert "environment variable AUTHZ_TRUST_XFCC: expected true or false, got 'maybe'" in message
    assert "--listen: listen: '127.0.0.1:99999': the port 99999 is out of range" in message


def test_missing_files_and_directories(tree: Path) -> None:
    path = write(
        tree,
        f"policies: {tree / 'nope'}\nca_bundle: {tree / 'ca2.pem'}\n"
        f"decision_log: {tree / 'no-dir' / 'd.log'}\n",
    )
    message = error_of(path)
    assert f"{path}:1: policies: " in message and "does not exist" in message
    assert f"{path}:2: ca_bundle: " in message
    assert f"{path}:3: decision_log: " in message and "does not exist" in message
    # a flag that fixes the policy directory wins over the file's bad one
    flags = {"policies": str(tree / "policies")}
    assert "policies:" not in error_of(path, flags=flags)


def test_a_relative_path_names_the_directory_it_was_looked_for_in(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A config file's relative paths are the working directory's, not the file's: the message
    says where it looked (issue 25: a new user running from another directory)."""
    path = write(tree, "policies: pols\n")
    monkeypatch.chdir(tree.parent)
    assert f"{path}:1: policies: 'pols' does not exist in {tree.parent}" in error_of(path)


def test_missing_or_broken_config_file(tree: Path) -> None:
    missing = str(tree / "absent.yaml")
    assert missing in error_of(missing)
    broken = write(tree, "listen: [a\nadmin: b\n")
    message = error_of(broken)
    assert broken in message and "not valid YAML" in message
    listed = write(tree, "- a\n- b\n")
    assert f"{listed}:1: expected a mapping" in error_of(listed)


def test_empty_file_is_all_defaults(tree: Path) -> None:
    assert load_settings(write(tree, "# nothing\n"), check_paths=False) == Settings()


def test_serve_flags_feed_the_settings(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    for name in [n for n in __import__("os").environ if n.startswith("AUTHZ_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AUTHZ_ADMIN", "127.0.0.1:2002")
    parser = argparse.ArgumentParser()
    serve.configure(parser)
    args = parser.parse_args(
        [
            "--policies",
            str(tree / "policies"),
            "--listen",
            "127.0.0.1:1",
            "--listen",
            "127.0.0.1:2",
            "--decision-log",
            "-",
            "--log-header",
            "X-A",
            "--log-header",
            "x-b",
            "--workers",
            "1",
            "--no-watch",
            "--trust-xfcc",
        ]
    )
    s = serve.settings_from(args)
    assert s.listen == ("127.0.0.1:1", "127.0.0.1:2") and s.admin == "127.0.0.1:2002"
    assert s.decision_log == "-" and s.log_headers == ("x-a", "x-b")
    assert s.watch is False and s.trust_xfcc is True and s.poll_policies is False
    defaults = serve.settings_from(parser.parse_args(["--policies", str(tree / "policies")]))
    assert (
        defaults.watch is True
        and defaults.log_level == "info"
        and defaults.admin == "127.0.0.1:2002"
    )


# -- one declaration per setting: file key, environment variable and flag all derived -----------


def _sample(entry: Entry) -> tuple[object, str, str]:
    """(a value other than the default, as YAML, as an environment string) for `entry`."""
    samples: dict[str, tuple[object, str, str]] = {
        "listen": (("127.0.0.1:7001",), "['127.0.0.1:7001']", "127.0.0.1:7001"),
        "admin": ("127.0.0.1:7002", "127.0.0.1:7002", "127.0.0.1:7002"),
        "policies": ("/etc/p", "/etc/p", "/etc/p"),
        "log_level": ("debug", "debug", "debug"),
        "log_format": ("json", "json", "json"),
        "socket_mode": ("0600", "'0600'", "0600"),
        "socket_group": ("0", "'0'", "0"),
        "log_headers": (("x-a",), "[x-a]", "x-a"),
        "rate_limit_store": ("redis://r:6379/1", "redis://r:6379/1", "redis://r:6379/1"),
        "http_listen": (("127.0.0.1:7003",), "['127.0.0.1:7003']", "127.0.0.1:7003"),
        "http_mode": ("forward-auth", "forward-auth", "forward-auth"),
        "http_path_prefix": ("/authz", "/authz", "/authz"),
        "otlp_endpoint": ("http://c:4318", "http://c:4318", "http://c:4318"),
        "resource_attributes": (("env=ci",), "[env=ci]", "env=ci"),
        "tls_allowed_clients": (("envoy.mesh",), "[envoy.mesh]", "envoy.mesh"),
    }
    if entry.key in samples:
        return samples[entry.key]
    if entry.type is bool:
        return (not entry.default, str(not entry.default).lower(), str(not entry.default))
    if entry.type is int:
        return (entry.default + 1, str(entry.default + 1), str(entry.default + 1))
    if entry.type is float:
        return (entry.default + 0.5, str(entry.default + 0.5), str(entry.default + 0.5))
    return ("x-sample", "x-sample", "x-sample")


def _get(settings: Settings, key: str) -> object:
    value: object = settings
    for part in key.split("."):
        value = getattr(value, part)
    return value


@pytest.mark.parametrize("key", list(settings_table()))
def test_every_setting_comes_from_file_environment_and_flag(key: str, tmp_path: Path) -> None:
    import argparse

    entry = settings_table()[key]
    value, as_yaml, as_env = _sample(entry)
    section, _, name = key.rpartition(".")
    text = f"{section}:\n  {name}: {as_yaml}\n" if section else f"{key}: {as_yaml}\n"
    from_file = load_settings(write(tmp_path, text), check_paths=False)
    from_env = load_settings(environ={entry.env: as_env}, check_paths=False)
    parser = argparse.ArgumentParser()
    serve.configure(parser)
    if entry.type is bool:
        argv = [entry.flag if value else f"--no-{entry.flag[2:]}"]
    else:
        argv = [entry.flag, as_env]
    from_flag = load_settings(flags={key: getattr(parser.parse_args(argv), key)}, check_paths=False)
    for settings in (from_file, from_env, from_flag):
        assert _get(settings, key) == value
        assert _get(settings, key) != entry.default
    assert entry.env == "AUTHZ_" + key.replace(".", "_").upper()


def test_a_new_limits_field_is_a_setting_without_more_code() -> None:
    """Another `Limits` field needs no entry anywhere else: the table walks the dataclasses."""
    from dataclasses import fields

    from authz.config import Limits

    for f in fields(Limits):
        entry = settings_table()[f"limits.{f.name}"]
        assert entry.flag == f"--limits-{f.name.replace('_', '-')}"
        assert entry.check is not None  # an integer bound must be at least 1
    assert "limits.max_headers: must be at least 1" in error_of(
        environ={"AUTHZ_LIMITS_MAX_HEADERS": "0"}, check_paths=False
    )


def test_a_misspelt_environment_variable_suggests_the_close_one() -> None:
    message = error_of(environ={"AUTHZ_LISTN": "127.0.0.1:1", "AUTHZ_FOO": "1"}, check_paths=False)
    assert "environment variable AUTHZ_LISTN: unknown setting; did you mean 'AUTHZ_LISTEN'?" in (
        message
    )
    assert "environment variable AUTHZ_FOO: unknown setting" in message


@pytest.mark.parametrize(
    "name",
    [
        "AUTHZ_PORT",
        "AUTHZ_SERVICE_HOST",
        "AUTHZ_SERVICE_PORT",
        "AUTHZ_SERVICE_PORT_GRPC",
        "AUTHZ_PORT_9191_TCP",
        "AUTHZ_PORT_9191_TCP_ADDR",
        "AUTHZ_ADMIN_SERVICE_HOST",  # a Service named authz-admin
        "AUTHZ_ADMIN_PORT_9092_TCP_PROTO",
        "AUTHZ_WORKER_INDEX",
        "AUTHZ_CONFIG",
    ],
)
def test_kubernetes_service_links_are_not_settings(name: str) -> None:
    environ = {} if name == "AUTHZ_CONFIG" else {name: "tcp://10.0.0.1:9191"}
    assert load_settings(environ=environ, check_paths=False) == Settings()


def test_config_file_yaml_problems_have_lines(tree: Path) -> None:
    path = write(tree, "workers: 1\nworkers: 2\n")
    assert f"{path}:2: not valid YAML: duplicate key 'workers' (first on line 1)" in error_of(path)


def test_socket_settings_are_checked(tree: Path) -> None:
    message = error_of(
        environ={"AUTHZ_SOCKET_MODE": "999", "AUTHZ_SOCKET_GROUP": "no-such-group-x"},
        check_paths=False,
    )
    assert "AUTHZ_SOCKET_MODE: socket_mode: '999' is not an octal mode" in message
    assert "AUTHZ_SOCKET_GROUP: socket_group: no group named 'no-such-group-x'" in message
