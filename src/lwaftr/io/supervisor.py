"""One worker process per instance, supervised.

``lwaftr run --conf FILE`` without interfaces runs every instance of the
configuration (or those given with ``--instance``), each in a worker process
of its own (``lwaftr run ... --worker ID``): its own interfaces, TAPs, engine
and counters, all mapping one shared copy of the compiled binding table.
The supervisor:

* fans control requests out to the workers (``NAME/control.sock``), one at
  a time: a change is made on every running worker, then written to the
  configuration's journal and fsynced (:mod:`lwaftr.config.journal`), and
  only then acknowledged; if a worker refuses it, those that took it take it
  back and the reply says which refused it; the journal is folded into the
  files in the background (:class:`lwaftr.mgmt.persist.Compactor`);
* restarts a worker that dies (after 0.5 s, doubling up to 10 s while it
  keeps dying); it starts from the files and the journal, and is sent the
  journal records written since it read it, so every worker serves the same
  binding table;
* on SIGHUP (``lwaftr reload``) compiles the file in a child process, then
  has every worker reload the file and its journal, in order with the changes;
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
from dataclasses import dataclass
from pathlib import Path

from lwaftr import counters as C
from lwaftr.io import state
from lwaftr.config.journal import Journal, open_journal
from lwaftr.io.control import ControlServer, request
from lwaftr.fileutil import write_atomic
from lwaftr.mgmt.persist import Compactor

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
        self.journal = open_journal(conf, log)
        self.compactor = Compactor(conf, self.journal) if isinstance(self.journal, Journal) else None
        self._preparing: subprocess.Popen | None = None     # a reload being compiled
        self.running = True
        self.reload_requested = False
        self._unsynced: list[tuple[dict, list[Worker], dict[str, dict | None]]] = []   # not yet fsynced
        self.control = ControlServer(self.top / "control.sock", self._control, flush=self._sync)

    # -- workers -----------------------------------------------------------------------------
    def _socket(self, w: Worker) -> Path:
        return self.top / "workers" / w.id / "control.sock"

    def _start(self, w: Worker) -> None:
        cmd = [sys.executable, "-m", "lwaftr", "run", "--conf", self.conf, "--name", self.name,
               "--worker", w.id, "--instance-index", w.id, *w.args, *self.extra]
        w.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, start_new_session=False)
        w.started, w.restart_at, w.ready = time.monotonic(), None, False
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
            r = request(sock, {"op": "ping"}, timeout=5)
            if not r.get("ok"):
                return
            missed = self.journal.records(after=int(r.get("seq", 0)))     # written since it read the journal
            if missed:
                r = request(sock, {"op": "replay", "records": missed, "seq": self.journal.seq}, timeout=120)
                if not r.get("ok"):
                    log.error("worker %s refused the journal's records: %s", w.id, r.get("error"))
                    return
        except OSError:
            return
        w.ready = True
        log.info("worker %s ready", w.id)

    # -- control -----------------------------------------------------------------------------
    def _control(self, req: dict) -> dict:
        op = req.get("op")
        if op == "ping":
            return {"ok": True, "workers": {w.id: w.ready for w in self.workers}}
        live = [w for w in self.workers if w.ready and w.proc is not None and w.proc.poll() is None]
        if not live:
            return {"ok": False, "error": "no worker is running"}
        if op == "replay":
            return {"ok": False, "error": "replay is the supervisor's own"}
        if op == "reload":
            self.request_reload()
            return {"ok": True}
        if op == "compact":
            if self.compactor is None:
                return {"ok": False, "error": f"no journal on disk ({self.journal.path} cannot be written)"}
            self.compactor.start()
            return {"ok": True, "through": self.compactor.through}
        change = op in CHANGES
        if change:
            req = dict(req, seq=self.journal.seq + 1)
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
        if change:
            record = next((r["record"] for r in replies.values() if r.get("record")), None)
            if not bad and record is not None:
                try:
                    self.journal.append(record, sync=False)
                except OSError as e:
                    log.error("cannot write the journal %s: %s; change taken back", self.journal.path, e)
                    bad = {"all": f"cannot write the journal {self.journal.path}: {e}"}
            if bad:
                self._take_back([w for w in live if replies[w.id].get("ok")], replies)
            elif record is not None:
                undo = {w.id: replies[w.id].get("undo") for w in live}
            for r in replies.values():
                r.pop("record", None)
                r.pop("undo", None)
        if bad:
            return {"ok": False, "error": "; ".join(f"worker {i}: {e}" for i, e in bad.items())}
        first = replies[live[0].id]
        if change and record is not None:
            first = dict(first)
            self._unsynced.append((first, live, undo))
        if op == "monitor":
            first = dict(first, target=", ".join(r.get("target", "") for r in replies.values()))
        return first

    def _sync(self) -> None:
        """Before the replies go out: the changes since the last call on disk (one
        fsync), or taken back on every worker and their replies turned into refusals."""
        if not self._unsynced:
            return
        batch, self._unsynced = self._unsynced, []
        try:
            self.journal.sync()
        except OSError as e:
            log.error("cannot write the journal %s: %s; %d changes taken back", self.journal.path, e, len(batch))
            for reply, workers, undo in reversed(batch):
                self._take_back(workers, {w.id: {"undo": undo[w.id], "record": True} for w in workers})
                reply.clear()
                reply.update({"ok": False, "error": f"cannot write the journal {self.journal.path}: {e}"})

    def _take_back(self, workers: list[Worker], replies: dict[str, dict]) -> None:
        """Undo a change on ``workers`` (it was refused elsewhere, or not written)."""
        for w in workers:
            undo = replies[w.id].get("undo")
            if undo is None:
                if replies[w.id].get("record") is not None:
                    log.error("worker %s cannot take back a change; restarting it from the files", w.id)
                    if w.proc is not None:
                        w.proc.kill()
                continue
            try:
                r = request(self._socket(w), {"op": "replay", "records": [undo], "seq": self.journal.seq},
                            timeout=120)
            except OSError as e:
                r = {"ok": False, "error": str(e)}
            if not r.get("ok"):
                log.error("worker %s did not take back a change (%s); restarting it", w.id, r.get("error"))
                if w.proc is not None:
                    w.proc.kill()

    def _reload(self) -> None:
        """SIGHUP: compile the file aside; :meth:`_reload_ready` has the workers load it."""
        self.reload_requested = False
        if self._preparing is not None:
            self.reload_requested = True            # after the one under way
            return
        self._preparing = subprocess.Popen([sys.executable, "-m", "lwaftr.config.load", self.conf],
                                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def _reload_ready(self) -> None:
        p = self._preparing
        if p is None or p.poll() is None:
            return
        self._preparing = None
        err = p.stderr.read().strip() if p.stderr else ""
        p.stderr.close()
        if p.returncode != 0:
            log.error("reload refused, keeping the running configuration: %s", err or f"exit {p.returncode}")
            return
        for w in self.workers:
            if not w.ready:
                continue                        # it loads the files when it starts
            try:
                r = request(self._socket(w), {"op": "reload"}, timeout=120)
                missed = self.journal.records(after=int(r.get("seq", 0))) if r.get("ok") else []
                if missed:                      # (a journal kept in memory: the worker read none)
                    r = request(self._socket(w), {"op": "replay", "records": missed, "seq": self.journal.seq},
                                timeout=120)
            except OSError as e:
                r = {"ok": False, "error": str(e)}
            if not r.get("ok"):
                log.error("worker %s: reload refused: %s", w.id, r.get("error"))
        for s in self.services:
            s.reload()

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
                    self._reload()
                self._reload_ready()
                if self.compactor is not None:
                    self.compactor.poll()
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
        if self.compactor is not None:
            self.compactor.stop()
        if self._preparing is not None:
            self._preparing.kill()
            self._preparing.wait()
        self.journal.close()
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
