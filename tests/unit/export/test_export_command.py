"""`authz export envoy`: the filters, the findings rule by rule, the exit code; the ECDS files;
`authz lint`'s informational finding."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from authz.cli import main
from authz.export import export_envoy
from authz.export.ecds import write_ecds
from authz.export.envoy import FILTER_NAMES
from authz.policy import load_policy_set

EXPORTABLE = """\
hosts: [shop.example.com]
rules:
  - {name: no-admin, action: deny, to: [{paths: ["/admin/{**}"]}]}
  - {name: reads, action: allow, to: [{methods: [GET], paths: ["/api/{**}"]}]}
"""
NOT_EXPORTABLE = """\
authentication:
  jwt:
    - issuer: https://127.0.0.1:9
      discovery: true
rules:
  - name: tenant
    action: allow
    when: [{header: ":path", equals: /x}]
"""


def _dir(tmp_path: Path, text: str) -> Path:
    (tmp_path / "p.yaml").write_text(text)
    return tmp_path


def test_prints_the_filters_in_order_and_the_hcm_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["export", "envoy", str(_dir(tmp_path, EXPORTABLE)), "--format", "json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert [f["name"] for f in out["http_filters"]] == list(FILTER_NAMES)
    assert out["http_connection_manager"]["normalize_path"] is True
    filters = {f["name"]: f["typed_config"] for f in out["http_filters"]}
    deny = filters["authz.deny"]["rules"]
    assert deny["action"] == "DENY" and {"no-admin", "no-admin;params"} <= set(deny["policies"])
    assert set(filters["authz.allow"]["rules"]["policies"]) == {"reads"}
    tokens = filters["authz.tokens"]["matcher"]
    assert tokens["on_no_match"]["action"]["typed_config"]["action"] == "ALLOW"


def test_lists_each_unexportable_rule_and_provider_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["export", "envoy", str(_dir(tmp_path, NOT_EXPORTABLE))])
    err = capsys.readouterr().err
    assert code == 1
    # Discovery is resolved at export time; an issuer that does not answer is named.
    assert "[provider https://127.0.0.1:9] not exportable: discovery: " in err
    assert "p.yaml:6: [tenant] not exportable: header condition on :path" in err


def test_a_jwks_uri_provider_is_fetched_by_envoy_from_its_own_cluster(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = EXPORTABLE.replace(
        "rules:",
        "authentication:\n  jwt:\n    - issuer: https://id.example\n"
        "      jwks_uri: https://id.example:8443/keys\nrules:",
    )
    (tmp_path / "ca.pem").write_text("")
    code = main(
        ["export", "envoy", str(_dir(tmp_path, text)), "--format", "json", "--jwks-ca",
         str(tmp_path / "ca.pem")]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "keys fetched by Envoy from https://id.example:8443/keys (jwks_uri)" in captured.err
    out = json.loads(captured.out)
    [cluster] = out["clusters"]
    assert cluster["name"] == "authz_jwks_id.example_8443" and cluster["type"] == "LOGICAL_DNS"
    tls = cluster["transport_socket"]["typed_config"]
    assert tls["sni"] == "id.example"
    validation = tls["common_tls_context"]["validation_context"]
    assert validation["trusted_ca"]["filename"] == str(tmp_path / "ca.pem")
    assert validation["match_typed_subject_alt_names"] == [
        {"san_type": "DNS", "matcher": {"exact": "id.example"}}
    ]
    filters = {f["name"]: f["typed_config"] for f in out["http_filters"]}
    [provider] = filters["authz.jwt_authn"]["providers"].values()
    remote = provider["remote_jwks"]
    assert remote["http_uri"] == {
        "uri": "https://id.example:8443/keys",
        "cluster": "authz_jwks_id.example_8443",
        "timeout": "5s",
    }
    assert remote["cache_duration"] == "300s" and "async_fetch" in remote
    # A remote set may change size: a token without kid is refused, as the service does.
    assert "jwt_kid_required" in filters["authz.deny"]["rules"]["policies"]


def test_lint_names_what_is_not_exportable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["lint", "--exportable", "--strict", str(_dir(tmp_path, NOT_EXPORTABLE))]) == 1
    assert "[tenant] not-exportable: header condition on :path" in capsys.readouterr().out
    # Without --exportable, the findings do not depend on whether the extra is installed.
    main(["lint", str(_dir(tmp_path, NOT_EXPORTABLE))])
    assert "not-exportable" not in capsys.readouterr().out


def test_a_thousand_rules_export_in_well_under_a_second_of_work(tmp_path: Path) -> None:
    rules = "".join(
        f"  - {{name: r{i}, action: {'deny' if i % 5 == 0 else 'allow'}, "
        f'to: [{{methods: [GET], paths: ["/api/v{i}/{{*}}", "/x{i}*"]}}]}}\n'
        for i in range(1000)
    )
    policy_set = load_policy_set(str(_dir(tmp_path, "rules:\n" + rules)))
    started = time.process_time()
    result = export_envoy(policy_set)
    result.filter_dicts()
    spent = time.process_time() - started
    assert result.exportable
    # Reported, not asserted tightly (shared machine): the bench measures it properly.
    print(f"1000 rules exported in {spent:.3f}s of CPU")


def test_ecds_files_are_swapped_in_one_step(tmp_path: Path) -> None:
    policy_set = load_policy_set(str(_mk(tmp_path)))
    out = tmp_path / "ecds"
    first = write_ecds(str(out), export_envoy(policy_set), policy_set.revision)
    second = write_ecds(str(out), export_envoy(policy_set), policy_set.revision)
    assert first != second and os.readlink(out / "..data") == second
    assert not (out / first).exists()  # the old version is gone once nothing points at it
    for name in FILTER_NAMES:
        document = json.loads((out / f"{name}.yaml").read_text())
        [resource] = document["resources"]
        assert resource["name"] == name and resource["typed_config"]["@type"]


def _mk(tmp_path: Path) -> Path:
    d = tmp_path / "p"
    d.mkdir()
    return _dir(d, EXPORTABLE)


def test_a_field_the_table_refuses_is_reported_rule_by_rule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A `Refused` entry in the export's table (a new field, say, with no RBAC equivalent) is
    what makes a field not exportable: each rule using it is named, the rest export."""
    from authz.export import field_table
    from authz.policy.language.fields import TO_FIELDS

    ports = next(f for f in TO_FIELDS if f.name == "ports")
    table = {**field_table.FIELD_EXPORTS, ports: field_table.Refused("no such thing in RBAC")}
    monkeypatch.setattr("authz.export.rules.FIELD_EXPORTS", table)
    text = EXPORTABLE + "  - {name: on-port, action: allow, to: [{not_ports: [8443]}]}\n"
    result = export_envoy(load_policy_set(str(_dir(tmp_path, text))))
    assert [(f.subject, f.why) for f in result.findings if f.decides] == [
        ("on-port", "`not_ports`: no such thing in RBAC")
    ]


def test_hybrid_keeps_what_it_cannot_export_in_ext_authz_and_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["export", "envoy", str(_dir(tmp_path, NOT_EXPORTABLE)), "--hybrid", "--format", "json"]
    )
    captured = capsys.readouterr()
    assert code == 0
    assert "[tenant] kept in ext_authz: header condition on :path" in captured.err
    names = [f["name"] for f in json.loads(captured.out)["http_filters"]]
    assert names[-3:] == ["authz.route", "authz.ext_authz", "authz.audit"]


def test_the_languages_service_only_parts_are_named(tmp_path: Path) -> None:
    """Captures export (they match like `{*}`), `equals_capture`, `query` and `methods: ["*"]`
    are judged one by one; a condition Envoy cannot evaluate is named, never approximated."""
    text = """\
rules:
  - {name: any-method, action: allow, to: [{methods: ["*"], paths: ["/t/{tenant}/{**}"]}]}
  - name: own-tenant
    action: allow
    to: [{paths: ["/t/{tenant}/{**}"]}]
    when: [{header: x-tenant, equals_capture: tenant}]
  - {name: by-query, action: allow, when: [{query: debug, present: true}]}
"""
    result = export_envoy(load_policy_set(str(_dir(tmp_path, text))))
    assert {f.subject: f.why for f in result.findings if f.decides} == {
        "own-tenant": "`header` `equals_capture` has no equivalent in Envoy's RBAC filter",
        "by-query": "`query` conditions: Envoy's RBAC cannot read a decoded query parameter",
    }


def test_a_token_in_a_query_parameter_or_cookie_is_not_exported(tmp_path: Path) -> None:
    """jwt_authn reads the first of two values; the service refuses two different tokens."""
    (tmp_path / "jwks.json").write_text('{"keys": []}')
    text = EXPORTABLE.replace(
        "rules:",
        "authentication:\n  jwt:\n    - issuer: https://id.example\n"
        "      jwks_uri: https://id.example/keys\n"
        "      from: [{query: access_token}, {cookie: session}]\nrules:",
    )
    result = export_envoy(load_policy_set(str(_dir(tmp_path, text))))
    refused = [f.why for f in result.findings if f.decides]
    assert len(refused) == 2 and all("first of two values" in why for why in refused)
