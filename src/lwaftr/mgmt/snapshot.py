"""Read a running instance's counters from its state directory, per worker.

Two layouts under ``$LWAFTR_RUN_DIR/NAME/`` (see ``lwaftr.io.state``) are
understood:

* one process (today's ``lwaftr run``)::

      pid, counters, counters.json        -> worker "0"

* several workers, one counters file each::

      pid, counters.json                  the instance (pid, started, names)
      workers/ID/counters                 worker ID's uint64 counters
      workers/ID/counters.json            optional: {"names": [...], ...}

  When ``workers/`` holds at least one ``counters`` file, those are the
  instance's counters and a top-level ``counters`` file (if any) is not read,
  so nothing is counted twice.  A worker without its own ``counters.json``
  uses the instance's names (or, failing that, ``lwaftr.counters.NAMES``).

Files are mapped read-only and copied: nothing is asked of the data plane,
and each 64-bit counter is read whole.
"""
from __future__ import annotations

import json
import mmap
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lwaftr import counters as C
from lwaftr.io import state

WORKERS = "workers"


@dataclass(frozen=True)
class Snapshot:
    """The counters of one instance at one moment."""

    name: str
    pid: int
    started: float | None                   #: wall-clock start time (epoch seconds), if known
    workers: dict[str, dict[str, int]]      #: worker id -> counter name -> value

    def totals(self) -> dict[str, int]:
        """Counters summed over the workers."""
        out: dict[str, int] = {}
        for values in self.workers.values():
            for k, v in values.items():
                out[k] = out.get(k, 0) + v
        return out


alive = state.alive


def _pid(d: Path) -> int:
    return int((d / "pid").read_text())


def listing() -> list[tuple[str, int, bool]]:
    """``(name, pid, alive)`` of every state directory with a pid file, by name.

    Dead ones are instances that did not stop cleanly (their directory stayed).
    """
    out = []
    base = state.run_dir()
    try:
        entries = sorted(base.iterdir())
    except OSError:
        return out
    for d in entries:
        try:
            pid = _pid(d)
        except (OSError, ValueError):
            continue
        out.append((d.name, pid, alive(pid)))
    return out


def _json(path: Path) -> dict | None:
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def read_array(path: Path) -> np.ndarray:
    """A copy of the uint64 counters in ``path`` (OSError or ValueError if not readable)."""
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size < 8:
            raise ValueError(f"{path} is empty (instance starting?)")
        with mmap.mmap(fh.fileno(), size - size % 8, mmap.MAP_SHARED, mmap.PROT_READ) as m:
            arr = np.frombuffer(m, np.uint64)
            out = arr.copy()
            del arr             # release the buffer before the mapping closes
    return out


def _values(path: Path, names) -> dict[str, int]:
    return {n: int(v) for n, v in zip(names, read_array(path))}


def _worker_key(w: str):
    return (0, int(w), w) if w.isdigit() else (1, 0, w)


def read(name: str) -> Snapshot:
    """The counters of running instance ``name``.

    LookupError if it is not running; OSError or ValueError if its state
    cannot be read (it is starting or stopping).
    """
    d = state.run_dir() / name
    try:
        pid = _pid(d)
    except (OSError, ValueError):
        raise LookupError(f"no lwaftr instance named {name!r} (nothing in {d})") from None
    if not alive(pid):
        raise LookupError(f"lwaftr instance {name!r} is not running (pid {pid} is gone)")
    meta = _json(d / "counters.json") or {}
    names = meta.get("names") or C.NAMES
    started = meta.get("started")
    workers: dict[str, dict[str, int]] = {}
    worker_started = []
    wdir = d / WORKERS
    if wdir.is_dir():
        for w in sorted((p.name for p in wdir.iterdir()), key=_worker_key):
            f = wdir / w / "counters"
            if not f.exists():
                continue
            wmeta = _json(wdir / w / "counters.json") or {}
            try:
                workers[w] = _values(f, wmeta.get("names") or names)
            except FileNotFoundError:   # the worker went away between listing and reading
                continue
            if isinstance(wmeta.get("started"), (int, float)):
                worker_started.append(wmeta["started"])
    if not workers:
        workers["0"] = _values(d / "counters", names)
    if not isinstance(started, (int, float)):
        started = min(worker_started, default=None)
    return Snapshot(name=name, pid=pid, started=started, workers=workers)
