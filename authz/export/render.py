"""The export's result and how it is written: `Finding`s, `EnvoyExport`, and typed Envoy
messages as protobuf JSON (`to_json`)."""

from __future__ import annotations

import base64
import datetime
import enum
from dataclasses import dataclass, field
from typing import Any

from authz.envoy_bootstrap import EXPORTED_FILTERS, HYBRID_FILTERS
from authz.export.envoy_api import Message


@dataclass(frozen=True, slots=True)
class Finding:
    """Something Envoy's filters cannot do as the engine does. `decides`: it would change an
    allow or a deny (not exportable); otherwise only the details of the answer differ."""

    file: str
    line: int
    subject: str  # a rule name, "provider ISSUER" or "hosts PATTERN"
    why: str
    decides: bool = True
    kept: bool = False  # --hybrid: not exportable, so its hosts stay with the service

    def __str__(self) -> str:
        kind = "kept in ext_authz" if self.kept else "not exportable" if self.decides else "differs"
        return f"{self.file}:{self.line}: [{self.subject}] {kind}: {self.why}"


@dataclass(slots=True)
class EnvoyExport:
    """The filters (name and typed Envoy config, in order) and what they cannot express."""

    filters: list[tuple[str, Any]] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    # Clusters the filters name (a remote JWKS server each), as protobuf JSON.
    clusters: list[dict[str, Any]] = field(default_factory=list)

    @property
    def exportable(self) -> bool:
        return not any(f.decides for f in self.findings)

    def filter_dicts(self) -> list[dict[str, Any]]:
        """`http_filters` entries (name + typed_config with @type), snake_case as in YAML."""
        urls = dict(EXPORTED_FILTERS + HYBRID_FILTERS)
        memo: dict[int, Any] = {}
        return [
            {
                "name": name,
                "typed_config": {
                    "@type": urls[name],
                    # A dict is already protobuf JSON (authz/export/tokens.py says why).
                    **(message if isinstance(message, dict) else to_json(message, memo)),
                },
            }
            for name, message in self.filters
        ]


def to_json(message: Message, memo: dict[int, Any] | None = None) -> dict[str, Any]:
    """A message as protobuf JSON with proto field names, defaults left out, fields in the
    order envoy-data-plane declares them (authz/export/envoy_api.py).

    The message was checked when built, so this only walks it. A sub-message shared by many
    rules (the workload check, a file's hosts) is walked once: `memo` maps it to its (shared,
    never mutated) JSON.
    """
    memo = {} if memo is None else memo
    hit = memo.get(id(message))
    if hit is not None:
        return hit  # type: ignore[no-any-return]
    values = message.__dict__
    out: dict[str, Any] = {}
    for attr, name, default in message.order():
        value = values.get(attr)
        if value is None or value == default:
            continue
        out[name] = _json_value(value, memo)
    memo[id(message)] = out
    return out


def _json_value(value: Any, memo: dict[int, Any]) -> Any:
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, list):
        return [_json_value(v, memo) for v in value]
    if isinstance(value, dict):
        return {k: _json_value(v, memo) for k, v in value.items()}
    if isinstance(value, datetime.timedelta):
        return f"{value.total_seconds():g}s"
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return to_json(value, memo)


# --- small constructors -----------------------------------------------------------------------
