"""A running instance's state directory: pid and counters in shared memory.

``lwaftr run`` keeps, under ``$LWAFTR_RUN_DIR`` (default ``/run/lwaftr``)
``/NAME/``::

    pid            the process id (``lwaftr reload`` signals it)
    counters       uint64 counters, in the order of ``counters.json``, which the
                   data plane increments in place (a shared file mapping)
    counters.json  {"names": [...], "pid": ..., "started": ...}
    alarms.json    the alarms raised and not cleared, {name: text} (see
                   ``lwaftr.mgmt.alarms``); rewritten when one is raised or cleared

``lwaftr counters`` maps the file read-only and prints the values while the
instance forwards: no socket, no request, nothing asked of the data plane.
A counter is one aligned 64-bit word, so a reader sees each value whole.
"""
from __future__ import annotations

import json
import mmap
import os
import time
from pathlib import Path

import numpy as np

from lwaftr import counters as C
from lwaftr.fileutil import write_atomic


#: A worker's alarms file (see :meth:`StateDir.write_alarms`).
ALARMS = "alarms.json"


def run_dir() -> Path:
    return Path(os.environ.get("LWAFTR_RUN_DIR", "/run/lwaftr"))


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists (a process of another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class InstanceBusy(RuntimeError):
    """Another live process holds this instance name."""


class StateDir:
    """Create (and on :meth:`close` remove) the state of instance ``name``.

    With ``worker`` (a supervised worker, see :mod:`lwaftr.io.supervisor`) the
    state is ``NAME/workers/ID/`` and its counters file is kept across the
    worker's restarts (the counts carry on); the supervisor owns ``NAME/pid``.
    """

    def __init__(self, name: str, worker: str | None = None) -> None:
        self.worker = worker
        top = run_dir() / name
        self.path = top if worker is None else top / "workers" / worker
        self.path.mkdir(parents=True, exist_ok=True)
        pid_file = self.path / "pid"
        try:
            old = int(pid_file.read_text())
        except (OSError, ValueError):
            old = 0
        if old and old != os.getpid() and alive(old):
            raise InstanceBusy(f"an lwaftr instance named {name!r} is running (pid {old}); "
                               f"give another --name")
        size = C.N_COUNTERS * 8
        keep = worker is not None and (self.path / "counters").exists() \
            and (self.path / "counters").stat().st_size == size and self._same_names()
        fd = os.open(self.path / "counters", os.O_RDWR | os.O_CREAT | (0 if keep else os.O_TRUNC), 0o644)
        try:
            os.ftruncate(fd, size)
            self._map = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        #: The counters, in shared memory: give this array to the engine.
        self.counters = np.frombuffer(self._map, np.uint64)
        write_atomic(self.path / "counters.json",
                     json.dumps({"names": list(C.NAMES), "pid": os.getpid(), "started": time.time()}).encode())
        write_atomic(pid_file, f"{os.getpid()}\n".encode())

    def write_alarms(self, raised: dict[str, str]) -> None:
        """Replace ``alarms.json``: the alarms raised and not cleared, name -> text."""
        write_atomic(self.path / ALARMS, json.dumps(raised, sort_keys=True).encode())

    def _same_names(self) -> bool:
        try:
            return json.loads((self.path / "counters.json").read_text())["names"] == list(C.NAMES)
        except (OSError, ValueError, KeyError):
            return False

    def close(self, *, keep_counters: bool = False) -> None:
        del self.counters
        try:
            self._map.close()
        except BufferError:         # an engine still holds a view: the mapping goes with it
            pass
        for f in ("pid", ALARMS) if keep_counters else ("pid", ALARMS, "counters", "counters.json"):
            try:
                (self.path / f).unlink()
            except OSError:
                pass
        if not keep_counters:
            try:
                self.path.rmdir()
            except OSError:
                pass


def instances() -> list[str]:
    """Names of the instances with a live process."""
    out = []
    base = run_dir()
    if base.is_dir():
        for d in sorted(base.iterdir()):
            try:
                if alive(int((d / "pid").read_text())):
                    out.append(d.name)
            except (OSError, ValueError):
                continue
    return out


def pid_of(name: str) -> int:
    """The live process of instance ``name`` (LookupError if none)."""
    try:
        pid = int((run_dir() / name / "pid").read_text())
    except (OSError, ValueError):
        raise LookupError(f"no lwaftr instance named {name!r} (nothing in {run_dir() / name})") from None
    if not alive(pid):
        raise LookupError(f"lwaftr instance {name!r} is not running (pid {pid} is gone)")
    return pid


def read_counters(name: str) -> dict[str, int]:
    """The current counters of instance ``name``, by name (summed over its workers)."""
    pid_of(name)
    from lwaftr.mgmt.snapshot import read
    return read(name).totals()
