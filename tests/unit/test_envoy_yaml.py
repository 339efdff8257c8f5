"""render_yaml writes what `yaml.dump` writes (authz/envoy_yaml.py makes the emitter's events
itself, for speed): byte for byte, on the configurations it renders and on scalars chosen to
need quoting, escaping or a type of their own."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from authz.envoy_bootstrap import REQUEST_HARDENING
from authz.envoy_yaml import render_yaml
from authz.export import export_envoy
from authz.policy import load_policy_set

REPO = Path(__file__).resolve().parents[2]

_Dumper: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class _NoAliases(_Dumper):  # type: ignore[misc]
    def ignore_aliases(self, data: Any) -> bool:
        return True


def _dumped(document: Any, header: str = "") -> str:
    """render_yaml as it was: PyYAML's representer and emitter, then the header."""
    text = yaml.dump(
        document, Dumper=_NoAliases, sort_keys=False, default_flow_style=False, width=4096
    )
    lines = [f"# {line}".rstrip() for line in header.splitlines()] if header else []
    return "\n".join([*lines, *text.splitlines()]) + "\n"


ODD = [
    *["true", "True", "FALSE", "yes", "No", "on", "off", "y", "n", "null", "Null", "~", ""],
    *["0", "-1", "0x1F", "0o17", "1_000", "1e3", "1.0", ".5", ".inf", "-.Inf", ".nan", "12:30"],
    *["2001-01-01", ":", "- a", "? x", "#x", "a #b", "a: b", "a:b", "'q'", '"dq"', "[x]", "{x}"],
    *["*a", "&a", "!t", "%x", "@x", "`x", "|", ">", "multi\nline", "tab\there", " lead"],
    *["trail ", "ünï", "\x85", "\u2028", "\ud7ff", "\x00", "\x7f", "a" * 5000, "-", "---"],
]


def test_odd_scalars_are_written_as_yaml_dump_writes_them() -> None:
    numbers = [0, -2, 2**70, 3.5, -0.0, 0.0, 1e20, 1e-7, math.inf, -math.inf, math.nan]
    document = {
        "strings": ODD,
        "numbers": numbers,
        "flags": [True, False, None],
        "keys": {s: s for s in ODD if "\n" not in s},
        "": {"": [], "empty": {}, "nested": [[], {}, [1, [2, {"a": None}]]]},
        "a" * 200: "a long key",
        1: "a number for a key",
    }
    assert render_yaml(document, header="h\nx") == _dumped(document, header="h\nx")


def test_what_is_not_plain_data_still_renders_as_before() -> None:
    document = {"tuple": (1, 2), "set": [{"a"}]}
    assert render_yaml(document) == _dumped(document)


def test_the_exported_filters_render_as_before() -> None:
    for directory in (REPO / "policies", REPO / "examples" / "partner-api"):
        for hybrid in (False, True):
            exported = export_envoy(load_policy_set(str(directory)), hybrid=hybrid)
            document = {
                "http_connection_manager": dict(REQUEST_HARDENING),
                "http_filters": exported.filter_dicts(),
            }
            assert render_yaml(document, header="x") == _dumped(document, header="x")


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(_JSON)
def test_any_json_document_renders_as_yaml_dump_writes_it(document: Any) -> None:
    assert render_yaml(document) == _dumped(document)
