"""The control socket of a running instance: JSON lines over a local stream socket.

``$LWAFTR_RUN_DIR/NAME/control.sock`` (mode 0600: the local administrator
only).  Each request is one JSON object on one line; each reply, one line
(see :mod:`lwaftr.mgmt.service` for the operations).  The live loop calls
:meth:`ControlServer.poll` between batches, so a request is handled whole
between two batches and never waits for, or delays, more than one.
"""
from __future__ import annotations

import json
import logging
import os
import select
import socket
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger("lwaftr.control")

MAX_REQUEST = 64 << 20      # a whole configuration with a big binding table fits


class ControlServer:
    def __init__(self, path: Path, handle: Callable[[dict[str, Any]], dict[str, Any]],
                 flush: Callable[[], Callable[[], bool] | None] | None = None) -> None:
        """``flush``: called before the replies to the requests read together are sent
        (the owner makes its changes durable there, all at once, and may turn
        replies into refusals in place); it may return ``ready()``: the replies
        (and further requests of that client) then wait until it is true."""
        self.path = Path(path)
        self.flush = flush
        self.held: list[tuple[socket.socket, list[dict[str, Any]], Callable[[], bool]]] = []
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            self.sock.bind(str(self.path))
        finally:
            os.umask(old)
        self.sock.listen(16)
        self.sock.setblocking(False)
        self.handle = handle
        self.clients: dict[socket.socket, bytearray] = {}

    def fileno(self) -> int:
        return self.sock.fileno()

    def poll(self) -> int:
        """Accept, read and answer whatever is ready, without blocking; returns requests handled."""
        self._release()
        waiting = {h[0] for h in self.held}
        socks = [self.sock, *(c for c in self.clients if c not in waiting)]
        ready = select.select(socks, [], [], 0)[0]
        handled = 0
        for s in ready:
            if s is self.sock:
                try:
                    c, _ = self.sock.accept()
                except BlockingIOError:
                    continue
                c.setblocking(False)
                self.clients[c] = bytearray()
                continue
            try:
                data = s.recv(1 << 20)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:
                self._drop(s)           # a client gone mid-request: its partial line is discarded
                continue
            buf = self.clients[s]
            buf += data
            if len(buf) > MAX_REQUEST:
                self._reply(s, {"ok": False, "error": "request too large"})
                self._drop(s)
                continue
            replies = []
            while b"\n" in buf:
                line, _, rest = bytes(buf).partition(b"\n")
                buf[:] = rest
                handled += 1
                try:
                    req = json.loads(line)
                    if not isinstance(req, dict):
                        raise ValueError("a request is a JSON object")
                except ValueError as e:
                    replies.append({"ok": False, "error": f"malformed request: {e}"})
                    continue
                try:
                    replies.append(self.handle(req))
                except Exception as e:              # never let a request end the worker
                    log.exception("control request failed")
                    replies.append({"ok": False, "error": f"internal error: {e}"})
            if replies and self.flush is not None:
                done = self.flush()         # (a client sending several requests at once: one fsync)
                if done is not None and not done():
                    self.held.append((s, replies, done))
                    continue
            for reply in replies:
                self._reply(s, reply)
        return handled

    @property
    def busy(self) -> bool:
        """Replies are waiting for their changes to be on disk."""
        return bool(self.held)

    def _release(self) -> None:
        still = []
        for s, replies, done in self.held:
            if not done():
                still.append((s, replies, done))
            elif s in self.clients:
                for reply in replies:
                    self._reply(s, reply)
        self.held = still

    def _reply(self, s: socket.socket, reply: dict[str, Any]) -> None:
        data = (json.dumps(reply) + "\n").encode()
        try:
            s.setblocking(True)
            s.settimeout(5)
            s.sendall(data)
            s.setblocking(False)
        except OSError:
            self._drop(s)

    def _drop(self, s: socket.socket) -> None:
        self.clients.pop(s, None)
        s.close()

    def close(self) -> None:
        for c in list(self.clients):
            self._drop(c)
        self.sock.close()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


def request(path: Path, req: dict[str, Any], timeout: float = 60) -> dict[str, Any]:
    """Send one request to the control socket at ``path`` and return the reply."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall((json.dumps(req) + "\n").encode())
        buf = bytearray()
        while not buf.endswith(b"\n"):
            chunk = s.recv(1 << 20)
            if not chunk:
                raise ConnectionError("the instance closed the connection")
            buf += chunk
    return json.loads(buf)


class Client:
    """A persistent connection for many requests (e.g. a stream of binding changes)."""

    def __init__(self, path: Path, timeout: float = 60) -> None:
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(timeout)
        self.s.connect(str(path))
        self.f = self.s.makefile("rb")

    def send(self, req: dict[str, Any]) -> None:
        self.s.sendall((json.dumps(req) + "\n").encode())

    def receive(self) -> dict[str, Any]:
        line = self.f.readline()
        if not line:
            raise ConnectionError("the instance closed the connection")
        return json.loads(line)

    def __call__(self, req: dict[str, Any]) -> dict[str, Any]:
        self.send(req)
        return self.receive()

    def close(self) -> None:
        self.f.close()
        self.s.close()
