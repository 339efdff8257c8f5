"""The decision page's routes (see the package's docstring), for the admin endpoint."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Mapping

from authz.page import html, views
from authz.page.access import refusal
from authz.page.views import Sources

HTML = "text/html; charset=utf-8"
JSON = "application/json"

Answer = tuple[int, str, bytes, tuple[tuple[str, str], ...]]


class DecisionPages:
    """The page's routes, for `authz.observe.admin.AdminServer(pages=...)`. With a `token`,
    every page needs it; without one, the page is open only when `open_without_token`."""

    def __init__(self, sources: Sources, *, token: str | None, open_without_token: bool) -> None:
        self._sources = sources
        self._token = token
        self._open = open_without_token

    def __call__(self, target: str, headers: Mapping[str, str]) -> Answer | None:
        """The answer for a GET of `target`, or None when the path is not the page's."""
        split = urllib.parse.urlsplit(target)
        path = split.path
        api = path == "/api" or path.startswith("/api/")
        route = path.removeprefix("/api") if api else path
        if route not in ("", "/", "/decisions") and not route.startswith("/decisions/"):
            return None
        refused = refusal(self._token, self._open, headers)
        if refused is not None:
            status, text = refused
            challenge = (("WWW-Authenticate", "Bearer"),) if status == 401 else ()
            return _answer(api, status, {"error": text}, html.message(status, text), challenge)
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(split.query).items() if v}
        if route in ("", "/"):
            data = views.overview(self._sources)
            return _answer(api, 200, data, "" if api else html.overview(data))
        if route == "/decisions":
            data = views.decisions(self._sources, query)
            return _answer(api, 200, data, "" if api else html.decisions(data))
        decision_id = urllib.parse.unquote(route.removeprefix("/decisions/"))
        one = views.decision(self._sources, decision_id)
        if one is None:
            text = f"no decision {decision_id} among the recent ones (the ring may have moved on)"
            return _answer(api, 404, {"error": text}, html.message(404, text))
        return _answer(api, 200, one, "" if api else html.decision(one))


def _answer(
    api: bool,
    status: int,
    data: object,
    page: str,
    extra: tuple[tuple[str, str], ...] = (),
) -> Answer:
    if api:
        body = json.dumps(data, indent=1, sort_keys=True, default=str) + "\n"
        return status, JSON, body.encode(), extra
    return status, HTML, page.encode(), extra
