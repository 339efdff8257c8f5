"""A small Redis-speaking (RESP2) server on loopback that lies, for the rate-limit store's checks.

    with LyingRedis("negative") as store:   # INCRBY answers -1000
        store.url                            # redis://127.0.0.1:PORT/0

Ways to lie (`mode`):
- `negative`: INCRBY answers -1000;
- `stuck`: INCRBY answers 1 whatever was added (a counter that never grows);
- `slow`: honest, every reply after `delay` seconds (200 ms by default).
With `counters_only`, the lie is told only for the service's counter keys (`authz:rl:{...}`),
so a probe of a fresh key is answered honestly: the cleverer liar.

Commands it knows: PING, INCRBY, EXPIRE, EXPIREAT, DEL; anything else gets an error, as a real
server answers an unknown command (redis-py ignores the error for CLIENT SETINFO).
"""

from __future__ import annotations

import socketserver
import threading
import time


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        while True:
            try:
                command = self._read_command()
            except (OSError, ValueError):
                return
            if command is None:
                return
            reply = self.server.owner.answer(command)
            if self.server.owner.delay:
                time.sleep(self.server.owner.delay)
            try:
                self.wfile.write(reply)
                self.wfile.flush()
            except OSError:
                return

    def _read_command(self) -> list[bytes] | None:
        line = self.rfile.readline(1024)
        if not line:
            return None
        if not line.startswith(b"*"):
            return line.split()  # an inline command
        words = []
        for _ in range(int(line[1:])):
            size = int(self.rfile.readline(1024)[1:])
            words.append(self.rfile.read(size + 2)[:-2])
        return words


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: LyingRedis


class LyingRedis:
    """See the module docstring."""

    def __init__(self, mode: str, *, counters_only: bool = False, delay: float = 0.2) -> None:
        assert mode in ("negative", "stuck", "slow"), mode
        self.mode = mode
        self.counters_only = counters_only
        self.delay = delay if mode == "slow" else 0.0
        self.counters: dict[bytes, int] = {}
        self.incrby_calls = 0
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self.port = self._server.server_address[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def answer(self, command: list[bytes]) -> bytes:
        name = command[0].upper() if command else b""
        if name == b"PING":
            return b"+PONG\r\n"
        if name == b"INCRBY" and len(command) == 3:
            return b":%d\r\n" % self._incrby(command[1], int(command[2]))
        if name in (b"EXPIRE", b"EXPIREAT", b"DEL"):
            return b":1\r\n"
        return b"-ERR unknown command '%s'\r\n" % name.lower()

    def _incrby(self, key: bytes, amount: int) -> int:
        with self._lock:
            self.incrby_calls += 1
            total = self.counters[key] = self.counters.get(key, 0) + amount
        lies = not self.counters_only or key.startswith(b"authz:rl:{")
        if lies and self.mode == "negative":
            return -1000
        if lies and self.mode == "stuck":
            return 1
        return total

    def __enter__(self) -> LyingRedis:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
