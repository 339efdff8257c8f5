"""The policy reference lives in the repository and stays in step with the code.

docs/policy.md is what policy authors read: these tests keep its examples valid, its reason-code
table complete, its links working, and every pointer to the policy language inside the repo.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from authz.policy import load_policy_set
from authz.reasons import CODES

REPO = Path(__file__).resolve().parents[2]
TOP_LEVEL = {"hosts", "authentication", "roles", "rules"}
POLICY_DOC = REPO / "docs" / "policy.md"
MARKDOWN = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SOURCES = [
    p
    for folder in ("authz", "tests", "bench", "deploy", "docs", "policies", "examples")
    for p in (REPO / folder).rglob("*")
    if p.is_file() and p.suffix in {".py", ".md", ".yaml", ".yml"}
]


def _doc() -> str:
    return POLICY_DOC.read_text(encoding="utf-8")


def _section(title: str) -> str:
    return _doc().split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_nothing_points_outside_the_repository_for_the_policy_language() -> None:
    offenders = [
        str(p.relative_to(REPO))
        for p in [*SOURCES, REPO / "README.md"]
        if re.search(r"shared/POLICY\.md|(?<![\w/])POLICY\.md", p.read_text(encoding="utf-8"))
    ]
    # These two lines are rewritten on the fix-wire branch (issue 10.4, 10.7): changed at merge.
    assert set(offenders) <= {"authz/wire/inbound.py", "tests/hostile/service.py"}, offenders


def _anchor(title: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to dashes."""
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: p.name)
def test_relative_links_and_anchors_resolve(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue  # an absolute URL
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        assert linked.exists(), f"{path.name}: broken link {target}"
        assert REPO in linked.parents or linked == REPO, f"{path.name}: {target} leaves the repo"
        if anchor and linked.suffix == ".md":
            headings = re.findall(r"^#{1,6} (.+)$", linked.read_text(encoding="utf-8"), re.M)
            assert anchor in {_anchor(h) for h in headings}, f"{path.name}: no anchor {target}"


def _codes_in_source() -> set[str]:
    # authz.reasons is the one table of codes (tests/unit/test_reasons.py proves the service
    # emits no other). Errors about the service's own configuration or policy files are never
    # a request's reason.
    return set(CODES) - {"invalid_config", "invalid_policy"}


def test_every_reason_code_the_service_gives_is_in_the_table() -> None:
    table = _section("Reason codes")
    codes = _codes_in_source()
    assert {"no_matching_rule", "no_policy_for_host", "jwt_expired", "invalid_path"} <= codes
    missing = sorted(c for c in codes if f"`{c}`" not in table)
    assert not missing, f"docs/policy.md, Reason codes: add {missing}"


def _yaml_blocks(text: str) -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", text, re.S)


def test_the_complete_example_file_is_a_valid_policy(tmp_path: Path) -> None:
    (example,) = [b for b in _yaml_blocks(_section("Policy files")) if "rules:" in b]
    (tmp_path / "example.yaml").write_text(example, encoding="utf-8")
    policy_set = load_policy_set(str(tmp_path))
    assert [r.name for r in policy_set.rules] == ["no-debug", "frontend-reads-orders"]


def test_the_reference_covers_this_batchs_request_rules() -> None:
    doc = _doc()
    for fact in (
        "`invalid_method`",
        "`invalid_host`",
        "strip_any_host_port",
        "strip_trailing_host_dot",
        "`forward` defaults to `false`",
        "dangling symlink",
    ):
        assert fact in doc, fact


def test_every_policy_example_in_the_reference_validates(tmp_path: Path) -> None:
    checked = 0
    for index, block in enumerate(_yaml_blocks(_doc())):
        document = yaml.safe_load(block)
        if not isinstance(document, dict) or not set(document) <= TOP_LEVEL:
            continue  # a fragment (`from:`, `when:`), shown inside a rule
        directory = tmp_path / str(index)
        directory.mkdir()
        text = block if "rules" in document else block + "rules: [{name: r, action: allow}]\n"
        (directory / "p.yaml").write_text(text, encoding="utf-8")
        for keys_file in re.findall(r"keys_file: (\S+)", block):
            (directory / keys_file).write_text("keys: []\n", encoding="utf-8")
        load_policy_set(str(directory))  # raises PolicyError with FILE:LINE on a bad example
        checked += 1
    assert checked >= 5
