"""One worker process per instance, supervised.

``lwaftr run --conf FILE`` without interfaces runs every instance of the
configuration (or those given with ``--instance``), each in a worker process
of its own (``lwaftr run ... --worker ID``): its own interfaces, TAPs, engine
and counters, all mapping one shared copy of the compiled binding table.
The supervisor:

* restarts a worker that dies (after 0.5 s, doubling up to 10 s while it
  keeps dying), and replays to it the changes made through the control
  socket since the configuration file was last loaded, so every worker
  serves the same binding table;
* forwards SIGHUP (``lwaftr reload``) to every worker, and fans control
  requests out to them (``NAME/control.sock``): a change is made on every
  worker, and the reply says which refused it;
* keeps ``NAME/pid`` and ``NAME/counters.json``; each worker counts in
  ``NAME/workers/ID/counters`` (kept across its restarts), which ``lwaftr
  counters``, ``metrics`` and ``top`` sum;
* with ``lwaftr { bgp { enable true; } }`` (or ``ospf``), runs BIRD once the
  workers are started (:mod:`lwaftr.routing.bird`: a BGP session per worker
  interface, OSPF routers per worker),
  has it recompute its announcements on reload, and stops it first on exit;
* with ``--snmp-agentx``, runs the SNMP subagent (:mod:`lwaftr.mgmt.snmp`) the
  same way: started, polled, told of reloads, stopped;
* on SIGTERM stops the workers and prints the summed counters.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from lwaftr import counters as C
from lwaftr.io import state
from lwaftr.io.control import ControlServer, request
from lwaftr.fileutil import write_atomic

log = logging.getLogger("lwaftr.supervisor")

RESTART_FIRST, RESTART_MAX, STABLE = 0.5, 10.0, 30.0
#: Requests that change the running configuration (replayed to restarted workers).
CHANGES = {"set", "add", "remove", "load-config", "batch"}


@dataclass
class Worker:
    id: str
    args: list[str]                      # interface arguments of `lwaftr run`
    proc: subprocess.Popen | None = None
    started: float = 0.0
    restart_at: float | None = None
    delay: float = RESTART_FIRST
    ready: bool = False
    restarts: int = 0
    pending: list[dict] = field(default_factory=list)   # changes to replay once ready


class Supervisor:
    def __init__(self, conf: str, specs: list[list[str]], name: str, extra: list[str], bird=None,
                 snmp=None) -> None:
        """``specs``: the interface arguments of each worker (``--v4 A --v6 B`` or
        ``--on-a-stick C``); ``extra``: arguments passed on to every worker;
        ``bird``: a :class:`lwaftr.routing.bird.Bird` to run (BGP), or None;
        ``snmp``: a :class:`lwaftr.mgmt.snmp.Subagent` to run, or None."""
        self.conf, self.name, self.extra, self.bird, self.snmp = conf, name, extra, bird, snmp
        #: what runs beside the workers: start(), poll(now), reload(), stop()
        self.services = [s for s in (bird, snmp) if s is not None]
        self.top = state.run_dir() / name
        self.top.mkdir(parents=True, exist_ok=True)
        try:
            old = int((self.top / "pid").read_text())
        except (OSError, ValueError):
            old = 0
        if old and old != os.getpid() and state.alive(old):
            raise state.InstanceBusy(f"an lwaftr instance named {name!r} is running (pid {old}); give another --name")
        shutil.rmtree(self.top / "workers", ignore_errors=True)      # a previous run's leftovers
        write_atomic(self.top / "counters.json",
                     json.dumps({"names": list(C.NAMES), "pid": os.getpid(), "started": time.time()}).encode())
        write_atomic(self.top / "pid", f"{os.getpid()}\n".encode())
        self.workers = [Worker(str(i), spec) for i, spec in enumerate(specs)]
        self.journal: list[dict] = []
        self.running = True
        self.reload_requested = False
        self.control = ControlServer(self.top / "control.sock", self._control)

    # -- workers -----------------------------------------------------------------------------
    def _socket(self, w: Worker) -> Path:
        return self.top / "workers" / w.id / "control.sock"

    def _start(self, w: Worker) -> None:
        cmd = [sys.executable, "-m", "lwaftr", "run", "--conf", self.conf, "--name", self.name,
               "--worker", w.id, "--instance-index", w.id, *w.args, *self.extra]
        w.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, start_new_session=False)
        w.started, w.restart_at, w.ready = time.monotonic(), None, False
        w.pending = list(self.journal)
        log.info("worker %s started (pid %d): %s", w.id, w.proc.pid, " ".join(w.args))

    def _check(self, w: Worker, now: float) -> None:
        if w.proc is None:
            if w.restart_at is not None and now >= w.restart_at:
                self._start(w)
            return
        code = w.proc.poll()
        if code is None:
            if not w.ready:
                self._try_ready(w)
            elif now - w.started > STABLE:
                w.delay = RESTART_FIRST
            return
        w.proc, w.ready = None, False
        w.restarts += 1
        log.warning("worker %s exited with status %s; restarting in %.1f s", w.id, code, w.delay)
        w.restart_at = now + w.delay
        w.delay = min(w.delay * 2, RESTART_MAX)

    def _try_ready(self, w: Worker) -> None:
        sock = self._socket(w)
        if not sock.exists():
            return
        try:
            if not request(sock, {"op": "ping"}, timeout=5).get("ok"):
                return
            for req in w.pending:            # changes it missed while it was down
                r = request(sock, req, timeout=60)
                if not r.get("ok"):
                    log.error("worker %s refused a replayed change (%s): %s", w.id, req.get("op"), r.get("error"))
        except OSError:
            return
        w.pending = []
        w.ready = True
        log.info("worker %s ready", w.id)

    # -- control -----------------------------------------------------------------------------
    def _control(self, req: dict) -> dict:
        op = req.get("op")
        if op == "ping":
            return {"ok": True, "workers": {w.id: w.ready for w in self.workers}}
        live = [w for w in self.workers if w.ready]
        if not live:
            return {"ok": False, "error": "no worker is running"}
        replies = {}
        for w in live:
            r = dict(req)
            if op == "monitor" and len(self.workers) > 1:     # one sink per worker
                if r.get("pcap"):
                    r["pcap"] = f"{r['pcap']}.worker{w.id}"
                if r.get("tap"):
                    r["tap"] = f"{r['tap']}-{w.id}"[:15]
            try:
                replies[w.id] = request(self._socket(w), r, timeout=120)
            except OSError as e:
                replies[w.id] = {"ok": False, "error": f"unreachable: {e}"}
        bad = {i: r.get("error") for i, r in replies.items() if not r.get("ok")}
        if op in CHANGES and len(bad) < len(replies):
            self.journal.append(req)            # applied somewhere: every later worker gets it too
            for w in self.workers:
                if not w.ready:
                    w.pending.append(req)
        if bad:
            return {"ok": False, "error": "; ".join(f"worker {i}: {e}" for i, e in bad.items())}
        first = replies[live[0].id]
        if op == "monitor":
            first = dict(first, target=", ".join(r.get("target", "") for r in replies.values()))
        return first

    # -- main loop ---------------------------------------------------------------------------
    def stop(self) -> None:
        self.running = False

    def request_reload(self) -> None:
        self.reload_requested = True

    def run(self) -> dict[str, int]:
        """Until :meth:`stop`; returns the counters summed over the workers."""
        import select
        for w in self.workers:
            self._start(w)
        try:
            for s in self.services:
                s.start()
            while self.running:
                if self.reload_requested:
                    self.reload_requested = False
                    self.journal = []              # the file is the configuration again
                    for w in self.workers:
                        w.pending = []
                        if w.proc is not None:
                            w.proc.send_signal(signal.SIGHUP)
                    for s in self.services:
                        s.reload()
                now = time.monotonic()
                for w in self.workers:
                    self._check(w, now)
                for s in self.services:
                    s.poll(now)
                select.select([self.control, *self.control.clients], [], [], 0.1)
                self.control.poll()
        finally:
            totals = self._shutdown()
        return totals

    def _shutdown(self) -> dict[str, int]:
        for s in self.services:             # BIRD: withdraw the routes before forwarding stops
            s.stop()
        for w in self.workers:
            if w.proc is not None and w.proc.poll() is None:
                w.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        for w in self.workers:
            if w.proc is not None:
                try:
                    w.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    w.proc.kill()
                    w.proc.wait()
        from lwaftr.mgmt.snapshot import read
        try:
            totals = {k: v for k, v in read(self.name).totals().items() if v}
        except (OSError, ValueError, LookupError):
            totals = {}
        self.control.close()
        shutil.rmtree(self.top / "workers", ignore_errors=True)
        for f in ("pid", "counters.json"):
            try:
                (self.top / f).unlink()
            except OSError:
                pass
        try:
            self.top.rmdir()
        except OSError:
            pass
        return totals
