"""Flags a new user gets wrong get a clear answer (issue 25): `authz envoy-config` refuses values
Envoy would refuse later (or read as nothing), and a misspelt flag gets a suggestion."""

from __future__ import annotations

from pathlib import Path

import pytest

from authz import cli
from authz.envoy_bootstrap import ecds_files


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--listen", "99999"], "--listen 99999: a port is 1-65535"),
        (["--listen", "0"], "--listen 0: a port is 1-65535"),
        (["--admin", "70000"], "--admin 70000: a port is 1-65535"),
        (["--istio", "--istio-port", "0"], "--istio-port 0: a port is 1-65535"),
        (["--http", "--readyz-port", "65536"], "--readyz-port 65536: a port is 1-65535"),
        (["--http", "--path-prefix", "check"], "--path-prefix 'check': a path prefix starts"),
        (["--http", "--path-prefix", "/c?x"], "--path-prefix '/c?x': a path prefix starts"),
        (["--timeout-ms", "0"], "--timeout-ms 0: at least 1"),
        (["--listen-address", "localhost"], "--listen-address 'localhost': Envoy binds an IP"),
        (["--native", "/nonexistent"], "--native /nonexistent: no exported filters there yet"),
    ],
)
def test_envoy_config_refuses_what_envoy_would(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["envoy-config", *flags]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(f"authz envoy-config: {message}"), err


def test_native_with_the_exported_files_is_accepted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty").mkdir()
    assert cli.main(["envoy-config", "--native", str(tmp_path / "empty")]) == 2
    capsys.readouterr()
    for path in ecds_files(str(tmp_path)):
        Path(path).write_text("{}")
    assert cli.main(["envoy-config", "--native", str(tmp_path)]) == 0
    assert str(tmp_path) in capsys.readouterr().out


def test_good_values_still_pass(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["envoy-config", "--http", "--path-prefix", "/check", "--listen", "1"]) == 0
    assert "path_prefix: /check" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "hint"),
    [
        (["serve", "--polices", "pol"], "--polices pol (did you mean --policies?)"),
        (["lint", "--strikt"], "--strikt (did you mean --strict?)"),
        (["envoy-config", "--upstrem=x:1"], "--upstrem=x:1 (did you mean --upstream?)"),
        (["validate", "a", "b"], "b"),
        # A misspelt required flag: named, not hidden behind "--path is required".
        (["check", "--pth", "/x"], "--pth (did you mean --path?)"),
        (["explain", "policies", "--paht=/x"], "--paht (did you mean --path?)"),
    ],
)
def test_a_misspelt_flag_gets_the_commands_usage_and_a_suggestion(
    argv: list[str], hint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"usage: authz {argv[0]}" in err
    assert f"authz {argv[0]}: error: unrecognized arguments: {hint}" in err


def test_a_misspelt_serve_flag_is_not_buried_under_forty_lines_of_usage(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        cli.main(["serve", "--polices", "pol"])
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("usage: authz serve [--policies DIR]") and len(err) == 2, err
    assert err[1].endswith("unrecognized arguments: --polices pol (did you mean --policies?)")


def test_a_required_flag_left_out_is_still_named(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["check", "--host", "a.example"])
    assert "the following arguments are required: --path" in capsys.readouterr().err


def test_a_misspelt_command_gets_a_suggestion(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["valdate", "policies"])
    assert exit_.value.code == 2
    assert "authz: error: unknown command 'valdate'; did you mean 'validate'?" in (
        capsys.readouterr().err
    )


def test_relative_files_mean_the_callers_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Envoy reads a relative name from its own working directory: the bootstrap names the file
    the caller meant (as --native and --authz-sds already did); Istio's are the sidecar's."""
    monkeypatch.chdir(tmp_path)
    mtls = ["--mtls", "--server-cert", "srv.pem", "--server-key", "k.pem", "--client-ca", "ca.pem"]
    upstream = [
        "--authz-ca",
        "ca.pem",
        "--authz-client-cert",
        "c.pem",
        "--authz-client-key",
        "k.pem",
    ]
    assert cli.main(["envoy-config", *mtls, *upstream]) == 0
    out = capsys.readouterr().out
    for name in ("srv.pem", "k.pem", "ca.pem", "c.pem"):
        assert f"filename: {tmp_path / name}\n" in out
    assert "filename: srv.pem" not in out and "filename: ca.pem" not in out
    assert cli.main(["envoy-config", "--istio", *upstream]) == 0
    assert "caCertificates: ca.pem\n" in capsys.readouterr().out
