"""The decision log: one JSON line per check, written off the request path.

A check only timestamps its result and puts it on a bounded queue (`put_nowait`); a writer
thread turns it into JSON and writes it. When the writer falls behind (a slow disk, a blocked
stdout pipe) the queue fills and further records are dropped and counted, never waited for:
a check must not be slowed or failed by its own log line. `dropped` is exported as a metric.

Secrets never reach the log. Only headers the operator allow-lists are shown, and a fixed deny
list wins over the allow list: credentials (`authorization`, cookies, API keys) and every header
a JWT provider of the current policy set reads a token from. The query string is never logged
(the raw path is cut at `?`), because a token may travel as `?access_token=`.

Record version 2 (`"v": 2`, docs/operations.md "Decision log format") adds what a decision
depends on, so `authz replay` can re-decide it: the raw path, destination port, the token's
state, the verified claims and the request headers the host's `when` conditions read (a header
in the secret list is logged as a `sha256:` digest, never as its value), and the peer
certificate's notAfter when Envoy sends the certificate.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import queue
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import IO, Any

from authz.claims import MISSING, claim_value
from authz.model import Request, Verdict
from authz.observe.recent import RecentDecisions
from authz.policy.language.spec import ApiKeyProvider, IntrospectionProvider, JwtProvider

log = logging.getLogger("authz.decision_log")

# Headers that carry credentials. Never logged, whatever the operator allow-lists.
SECRET_HEADERS = frozenset(
    {"authorization", "cookie", "set-cookie", "proxy-authorization", "x-api-key"}
)

DEFAULT_QUEUE_SIZE = 10_000

RECORD_VERSION = 2
# Claims a replay needs to check a token again under other providers (issuer, audience); the
# subject is in `request_principal`. Never the token itself.
REPLAY_CLAIMS = ("iss", "sub", "aud")

_STOP = object()  # the writer's sentinel: everything queued before it is written first


def token_headers(
    providers: Iterable[JwtProvider | ApiKeyProvider | IntrospectionProvider],
) -> frozenset[str]:
    """The (lower-case) header names the given JWT and API-key providers read credentials from."""
    return frozenset(
        location.header.lower()
        for provider in providers
        for location in provider.locations
        if location.header
    )


def rfc3339(timestamp: float) -> str:
    """`2024-05-01T12:00:00.123Z`: RFC 3339, UTC, milliseconds."""
    text = datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def secret_digest(value: str) -> str:
    """What the log keeps of a secret header value: equal values stay equal, nothing else."""
    return "sha256:" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


@functools.lru_cache(maxsize=1024)  # bounded; a connection's certificate repeats on every check
def certificate_not_after(encoded_pem: str) -> float | None:
    """The notAfter (Unix seconds) of Envoy's URL-encoded peer certificate PEM; None if unreadable.

    Read for the log only: whether the certificate is trusted is the identity layer's business.
    """
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(urllib.parse.unquote(encoded_pem).encode())
    except ValueError:
        return None
    return cert.not_valid_after_utc.timestamp()


def decision_record(
    timestamp: float,
    request: Request | None,
    verdict: Verdict,
    seconds: float,
    *,
    log_headers: Iterable[str] = (),
    secret_headers: frozenset[str] = SECRET_HEADERS,
) -> dict[str, Any]:
    """The log record of one check, as a JSON-ready dict. Pure: tested without any thread.

    `request` is None when the request could not be read (then only the verdict is known).
    """
    decision = verdict.decision
    dry_run = [
        {"rule": match.rule, "would": match.action} for match in decision.shadow if match.dry_run
    ]
    audit = [match.rule for match in decision.shadow if not match.dry_run]
    record: dict[str, Any] = {
        "time": rfc3339(timestamp),
        "decision_id": verdict.decision_id,
        "decision": "allow" if decision.allowed else "deny",
        "status": decision.status,
        "reason": decision.reason,
        "rule": decision.rule,
        "dry_run": dry_run,
        "audit": audit,
        "principal": verdict.principal or None,
        "request_principal": verdict.request_principal or None,
        "method": None,
        "host": None,
        "path": None,
        "source": None,
        "request_id": None,
        "policy_revision": verdict.policy_revision or None,
        "duration_ms": round(seconds * 1000.0, 3),
        "v": RECORD_VERSION,
    }
    evidence = verdict.evidence
    if request is None:
        if evidence is not None:
            record["source"] = evidence.source_ip
        return record
    record["method"] = request.method
    record["host"] = request.host
    record["path"] = request.path
    record["raw_path"] = request.raw_path.split("?", 1)[0].split("#", 1)[0] or None
    record["source"] = request.source_ip
    record["port"] = request.destination_port
    record["request_id"] = request.request_id or None
    if verdict.api_key_principal:  # the key's principal, never the key
        record["api_key_principal"] = verdict.api_key_principal
    if request.context:
        record["context"] = dict(request.context)
    if request.peer_principal and request.peer_principal != verdict.principal:
        # What Envoy said the peer is, when the identity layer did not accept it (another trust
        # domain): a replay under other trust domains needs it.
        record["peer_principal"] = request.peer_principal
    shown = {}
    for name in log_headers:
        if name in secret_headers:
            continue
        value = request.headers.get(name)
        if value is not None:
            shown[name] = value
    if evidence is not None:
        for name in evidence.read_headers:
            value = request.headers.get(name)
            if value is not None:
                shown[name] = secret_digest(value) if name in secret_headers else value
        record["token"] = evidence.token
        if evidence.token_reason:
            record["token_reason"] = evidence.token_reason
        if evidence.claims is not None:
            record["claims"] = _read_claims(evidence.claims, evidence.read_claims)
    if shown:
        record["headers"] = shown
    if request.peer_certificate:
        not_after = certificate_not_after(request.peer_certificate)
        if not_after is not None:
            record["cert_not_after"] = rfc3339(not_after)
    return record


def _read_claims(claims: Mapping[str, Any], names: frozenset[str]) -> dict[str, Any]:
    """The claims policies read (dotted names kept as one key, as conditions name them), plus
    those a replay needs to check the token again (`REPLAY_CLAIMS`)."""
    kept: dict[str, Any] = {}
    for name in (*REPLAY_CLAIMS, *sorted(names)):
        value = claim_value(claims, name)
        if value is not MISSING:
            kept[name] = value
    return kept


class DecisionLog:
    """An `authz.server.Observer` that writes one JSON line per check to `path` ("-": stdout),
    and hands each record to `recent` (the decision page's ring) when given. With `path` None
    only the ring is fed: the page works without a log file.

    `token_headers` is called on the writer thread for the header names the current JWT
    providers read tokens from (they change on reload); those are never logged either.
    Call `start()` before the first check and `close()` at shutdown (it writes what is queued).
    """

    def __init__(
        self,
        path: str | None,
        *,
        recent: RecentDecisions | None = None,
        log_headers: Iterable[str] = (),
        token_headers: Callable[[], frozenset[str]] = frozenset,
        max_queue: int = DEFAULT_QUEUE_SIZE,
        clock: Callable[[], float] = time.time,
        stream: IO[str] | None = None,
    ) -> None:
        self.path = path
        self.recent = recent
        self._log_headers = tuple(dict.fromkeys(name.lower() for name in log_headers))
        self._token_headers = token_headers
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_queue)
        self._clock = clock
        self._stream = stream
        # A file is written through a raw O_APPEND descriptor, one write(2) per batch of whole
        # lines: with `--workers N` several processes append to the same file, and a buffered
        # text file could split a batch into several writes that interleave mid-line.
        self._fd: int | None = None
        self._thread: threading.Thread | None = None
        self._dropped = 0
        self._dropped_lock = threading.Lock()
        self._write_errors = 0
        self._written = 0

    # -- the request path ------------------------------------------------------------------

    def __call__(self, request: Request | None, verdict: Verdict, seconds: float) -> None:
        """Queue one check's record; never blocks, never raises (a full queue drops it)."""
        try:
            self._queue.put_nowait((self._clock(), request, verdict, seconds))
        except queue.Full:
            self._count_drop()

    def _count_drop(self) -> None:
        # `+=` on an int is not atomic across threads; checks run on several threads.
        with self._dropped_lock:
            self._dropped += 1

    @property
    def dropped(self) -> int:
        """Records not written: the queue was full, or writing them failed."""
        return self._dropped

    @property
    def written(self) -> int:
        return self._written

    # -- the writer ------------------------------------------------------------------------

    def start(self) -> None:
        """Open the destination (raising OSError if it cannot be) and start the writer."""
        if self._thread is not None:
            return
        if self._stream is None and self._fd is None and self.path is not None:
            if self.path == "-":
                self._stream = sys.stdout
            else:
                # Append, so a restart keeps earlier lines and `logrotate copytruncate` works.
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        self._thread = threading.Thread(target=self._run, name="authz-decision-log", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued (for up to `timeout` seconds), stop the writer, close the file."""
        thread, self._thread = self._thread, None
        if thread is not None:
            try:
                self._queue.put(_STOP, timeout=timeout)
            except queue.Full:
                log.warning("decision log writer is stuck; %d records dropped", self._dropped)
            thread.join(timeout)
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                log.exception("closing the decision log failed")
            self._fd = None

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            lines: list[str] = []
            stop = False
            # Drain whatever else is queued, so a burst costs one write and one flush.
            while True:
                if item is _STOP:
                    stop = True
                    break
                line = self._format(item)
                if line is not None:
                    lines.append(line)
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if lines and self.path is not None:
                self._write(lines)
            if stop:
                return

    def _format(self, item: tuple[float, Request | None, Verdict, float]) -> str | None:
        try:
            secrets = SECRET_HEADERS | self._token_headers()
            record = decision_record(*item, log_headers=self._log_headers, secret_headers=secrets)
            # default=str: a value we did not foresee must not cost the whole line.
            line = json.dumps(record, separators=(",", ":"), default=str)
            if self.recent is not None:
                self.recent.add(record, len(line))
            return None if self.path is None else line + "\n"
        except Exception:
            log.exception("formatting a decision log record failed")
            self._count_drop()
            return None

    def _write(self, lines: list[str]) -> None:
        try:
            if self._fd is not None:
                data = "".join(lines).encode("utf-8")
                while data:  # a partial write (a signal, a full pipe) continues where it stopped
                    data = data[os.write(self._fd, data) :]
            else:
                assert self._stream is not None
                self._stream.write("".join(lines))
                self._stream.flush()
            self._written += len(lines)
        except (OSError, ValueError):
            # A full disk or a closed pipe: count, tell once in a while, keep draining so the
            # queue never blocks checks.
            with self._dropped_lock:
                self._dropped += len(lines)
            self._write_errors += 1
            if self._write_errors == 1 or self._write_errors % 1000 == 0:
                log.exception("writing the decision log failed (%d times)", self._write_errors)
