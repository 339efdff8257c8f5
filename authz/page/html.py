"""The decision page's HTML: the dicts of authz.page.views, rendered without any script.

Every value that came from a request (paths, hosts, header values, principals, reasons) or a
policy file is escaped with `html.escape(..., quote=True)` through `_t`, and nothing is ever
inserted unescaped; the admin endpoint also sends a Content-Security-Policy that forbids every
script, so even a missed escape could not run one. No asset is fetched from anywhere: the
styles are inline and the chart is inline SVG, so the page works in a cluster with no way out.
"""

from __future__ import annotations

import html
import json
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from authz.observe.recent import FILTERS

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1d2430;background:#f6f7f9}
header{background:#1d2430;color:#fff;padding:10px 20px}header a{color:#fff;margin-right:16px}
main{padding:16px 20px;max-width:1200px}h1{font-size:20px}h2{font-size:16px;margin-top:24px}
table{border-collapse:collapse;background:#fff;width:100%}
td,th{border:1px solid #dde1e7;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#eef0f3}code,pre{font:12px/1.4 ui-monospace,monospace}
pre{background:#fff;border:1px solid #dde1e7;padding:8px;overflow:auto;white-space:pre-wrap}
.allow{color:#126b2f;font-weight:600}.deny{color:#a11a1a;font-weight:600}
.note{background:#fff7e0;border:1px solid #e8d9a8;padding:8px}
.differs{background:#fde8e8;border:1px solid #e3a9a9;padding:8px}
.same{background:#e6f4ea;border:1px solid #a6d1b2;padding:8px}
form input{width:11em}form{margin:8px 0}
"""
PALETTE = ("#3b6fd4", "#d4553b", "#3ba86b", "#b58a1a", "#8a4fc9", "#2a9aa8", "#888888")


def _t(value: object) -> str:
    """Text for HTML: every value, from any source, goes through here."""
    return html.escape("" if value is None else str(value), quote=True)


def _link(path: str, text: object) -> str:
    return f'<a href="{_t(path)}">{_t(text)}</a>'


def decision_link(decision_id: object) -> str:
    return _link("/decisions/" + urllib.parse.quote(str(decision_id), safe=""), decision_id)


def page(title: str, body: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{_t(title)} · authz</title><style>{STYLE}</style></head><body>"
        f"<header>{_link('/', 'Overview')}{_link('/decisions', 'Recent decisions')}</header>"
        f"<main><h1>{_t(title)}</h1>{body}</main></body></html>"
    )


def _table(headings: Iterable[str], rows: Iterable[Iterable[str]]) -> str:
    """`rows` hold HTML already escaped by the caller (cells are built with _t or _link)."""
    head = "".join(f"<th>{_t(h)}</th>" for h in headings)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _verdict(decision: object) -> str:
    kind = "allow" if decision == "allow" else "deny"
    return f'<span class="{kind}">{_t(decision)}</span>'


def overview(data: Mapping[str, Any]) -> str:
    parts = [
        f"<p>Policy revision <code>{_t(data['revision'])}</code>, loaded {_t(data['loaded_at'])}"
        f": {_t(data['rules'])} rules in {len(data['files'])} files for "
        f"{len(data['hosts'])} host patterns.</p>"
    ]
    reload = data["last_reload"]
    if reload is not None:
        parts.append(
            f"<p>Last reload: <b>{_t(reload['outcome'])}</b> at {_t(reload['time'])} "
            f"(revision in force: <code>{_t(reload['revision'])}</code>)</p>"
        )
        if reload["problems"]:
            items = "".join(f"<li><code>{_t(p)}</code></li>" for p in reload["problems"])
            parts.append(f'<div class="note">The rejected set\'s problems:<ul>{items}</ul></div>')
    parts.append("<h2>Files</h2>")
    parts.append(
        _table(
            ("file", "hosts", "rules", "rate limits"),
            (
                (_t(f["file"]), _t(", ".join(f["hosts"])), _t(f["rules"]), _t(f["rate_limits"]))
                for f in data["files"]
            ),
        )
    )
    parts.append("<h2>JWT providers</h2>")
    providers = data["jwt_providers"]
    if providers:
        parts.append(
            _table(
                ("issuer", "key state", "keys loaded", "error"),
                (
                    (
                        _t(p["issuer"]),
                        _t(p["state"]),
                        _t("never" if p["keys_age_seconds"] is None else _age(p)),
                        _t(p["error"] or ""),
                    )
                    for p in providers
                ),
            )
        )
    else:
        parts.append("<p>No JWT provider in the policy set.</p>")
    parts.append("<h2>Rate-limit store</h2>")
    store = data["rate_limit_store"]
    parts.append(_table(("", ""), ((_t(k), _t(v)) for k, v in store.items())))
    parts.append("<h2>Decisions by reason, last minutes</h2>")
    parts.append(chart(data["decisions_by_minute"]))
    recent = data["recent"]
    parts.append(
        f"<p>{_link('/decisions', 'Recent decisions')}: {_t(recent['held'])} held "
        f"(at most {_t(recent['max_entries'])}, {_t(recent['bytes'])} of "
        f"{_t(recent['max_bytes'])} bytes).</p>"
    )
    return page("authz", "".join(parts))


def _age(provider: Mapping[str, Any]) -> str:
    seconds = int(provider["keys_age_seconds"])
    return f"{seconds // 60} min {seconds % 60} s ago" if seconds >= 60 else f"{seconds} s ago"


def chart(minutes: list[Mapping[str, Any]]) -> str:
    """Stacked bars, one per minute, one colour per reason (the six commonest, then the rest),
    with the numbers in a table below for anyone who cannot read the picture."""
    totals: Counter[str] = Counter()
    for minute in minutes:
        totals.update(minute["reasons"])
    if not totals:
        return "<p>No decisions in the last minutes.</p>"
    named = [reason for reason, _ in totals.most_common(len(PALETTE) - 1)]
    colour = {reason: PALETTE[i] for i, reason in enumerate(named)}
    highest = max(sum(m["reasons"].values()) for m in minutes) or 1
    width, height, bar = 24 * len(minutes), 120, 18
    shapes: list[str] = []
    for i, minute in enumerate(minutes):
        y = float(height)
        for reason, count in sorted(minute["reasons"].items()):
            size = height * count / highest
            y -= size
            fill = colour.get(reason, PALETTE[-1])
            shapes.append(
                f'<rect x="{i * 24 + 3}" y="{y:.1f}" width="{bar}" height="{size:.1f}" '
                f'fill="{fill}"><title>{_t(minute["minute"])}: {_t(reason)} {count}</title></rect>'
            )
    legend = " ".join(
        f'<span style="color:{colour[r]}">&#9632;</span> {_t(r)} ({totals[r]})' for r in named
    )
    rest = sum(count for reason, count in totals.items() if reason not in colour)
    if rest:
        legend += f' <span style="color:{PALETTE[-1]}">&#9632;</span> other ({rest})'
    svg = (
        f'<svg role="img" aria-label="decisions by reason per minute" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" '
        f'style="background:#fff;border:1px solid #dde1e7">{"".join(shapes)}</svg>'
    )
    rows = ((_t(reason), _t(count)) for reason, count in totals.most_common())
    return f"{svg}<p>{legend}</p>{_table(('reason', 'decisions'), rows)}"


def decisions(data: Mapping[str, Any]) -> str:
    filters = data["filters"]
    inputs = "".join(
        f'<label>{_t(key)} <input name="{_t(key)}" value="{_t(filters.get(key, ""))}"></label> '
        for key in FILTERS
    )
    form = f'<form method="get" action="/decisions">{inputs}<button>Filter</button></form>'
    rows = (
        (
            _t(r.get("time")),
            decision_link(r.get("decision_id")),
            _verdict(r.get("decision")),
            _t(r.get("status")),
            _t(r.get("reason")),
            _t(r.get("host")),
            _t(r.get("method")),
            f"<code>{_t(r.get('path'))}</code>",
            _t(r.get("principal") or r.get("request_principal") or r.get("api_key_principal")),
        )
        for r in data["decisions"]
    )
    headings = ("time", "decision id", "", "status", "reason", "host", "method", "path", "who")
    shown = len(data["decisions"])
    body = f"{form}<p>{shown} shown (newest first, at most {_t(data['limit'])}).</p>"
    return page("Recent decisions", body + _table(headings, rows))


def decision(data: Mapping[str, Any]) -> str:
    record = data["record"]
    was = (
        f"<p>{_verdict(record.get('decision'))} {_t(record.get('status'))} "
        f"<b>{_t(record.get('reason'))}</b> for <code>{_t(record.get('method'))} "
        f"{_t(record.get('host'))}{_t(record.get('path'))}</code> at {_t(record.get('time'))}, "
        f"policy revision <code>{_t(record.get('policy_revision'))}</code>.</p>"
    )
    parts = [was]
    now = data["now"]
    if now is None:
        parts.append(f'<div class="note">{_t(data["note"])}</div>')
    else:
        answer = f"{now['decision']} {now['status']} {now['reason']}"
        if now["differs"]:
            parts.append(
                f'<div class="differs">The answer <b>would differ now</b>: under revision '
                f"<code>{_t(now['revision'])}</code> this request gets {_t(answer)}.</div>"
            )
        else:
            parts.append(
                f'<div class="same">The answer would be the same now (revision '
                f"<code>{_t(now['revision'])}</code>: {_t(answer)}).</div>"
            )
        parts.append(_explanation(now["explanation"]))
    parts.append("<h2>The decision log record</h2>")
    parts.append(f"<pre>{_t(json.dumps(record, indent=2, sort_keys=True, default=str))}</pre>")
    return page(f"Decision {record.get('decision_id')}", "".join(parts))


def _explanation(explanation: Mapping[str, Any]) -> str:
    parts = [
        f"<p>Files for host <code>{_t(explanation['host'])}</code>: "
        f"{_t(', '.join(explanation['files']) or 'none')}.</p>"
    ]
    for note in explanation["notes"]:
        parts.append(f'<p class="note">{_t(note)}</p>')
    parts.append(
        _traces(
            "Rules of the host, now",
            ("rule", "action", "outcome"),
            explanation["rules"],
            lambda rule: (
                f"<b>{_t(rule['name'])}</b>" if rule["decides"] else _t(rule["name"]),
                _t(rule["action"] + (" (dry_run)" if rule["dry_run"] else "")),
                _t(rule["effect"] if rule["matched"] else f"no match: {rule['failed']}"),
            ),
        )
    )
    parts.append(
        _traces(
            "Rate limits of the host",
            ("limit", "key", "outcome"),
            explanation["limits"],
            lambda limit: (
                _t(limit["name"]),
                _t(f"{limit['key']}: {'present' if limit['key_present'] else 'absent'}"),
                _t(limit["state"] if limit["matched"] else f"no match: {limit['failed']}"),
            ),
        )
    )
    return "".join(parts)


def _traces(
    title: str,
    headings: tuple[str, ...],
    traces: list[Mapping[str, Any]],
    cells: Callable[[Mapping[str, Any]], tuple[str, ...]],
) -> str:
    """A rule or limit trace as a table: the deciding one marked, then `cells`, then where."""
    if not traces:
        return ""
    rows = (
        (
            "&#9654;" if trace["decides"] else "",
            *cells(trace),
            f"<code>{_t(trace['file'])}:{_t(trace['line'])}</code>",
        )
        for trace in traces
    )
    return f"<h2>{_t(title)}</h2>" + _table(("", *headings, "where"), rows)


def message(status: int, text: str) -> str:
    return page(f"{status}", f'<p class="note">{_t(text)}</p>')
