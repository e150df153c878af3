"""The change journal beside a configuration file: changes made while running, on disk.

``CONF.journal`` holds, one per line, the changes made to a running instance
(through its control socket, ``lwaftr config``, NETCONF) since ``CONF`` was
last written: each line is ``CRC32-HEX JSON`` and ends with a newline; the
first line is ``{"base": N}`` and then records ``{"seq": N+1, ...}``,
``{"seq": N+2, ...}`` follow in order.  A record is appended and fsynced
before the change is acknowledged; a line that is cut short or fails its
checksum (a crash while writing) ends the journal and is dropped, so a change
is either whole on disk or not there at all.

Records say what the configuration *is* after the change, not what was done
(a softwire's new value or its absence, a leaf's new value, a whole new
configuration), so replaying one that the files already hold changes
nothing.  That makes compaction simple (see :mod:`lwaftr.mgmt.persist`):
the files are rewritten with every record up to N folded in, then the
journal is rewritten keeping only the records after N; a crash between the
two leaves records that replay harmlessly.  Readers read the journal *before*
the files: an old journal replayed over newer files gives the same state.

The payload of a record (see :meth:`lwaftr.mgmt.service.ConfigService.apply_record`)::

    {"sw": [[ipv4, psid, [psid-length, reserved, b4-hex, br-hex] or null], ...]}
    {"req": {"op": "set"|"remove", "path": P, "value": V}}     (not a softwire)
    {"load": TEXT}                                              (a whole configuration)
"""
from __future__ import annotations

import json
import os
import threading
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from lwaftr.fileutil import fsync_dir, write_atomic

SUFFIX = ".journal"
#: Records are buffered in memory until they are made durable (one write and one fsync a group).
BUFFER = 1 << 20


def journal_path(conf: str | os.PathLike) -> Path:
    """Where the journal of configuration file ``conf`` is kept."""
    return Path(str(conf) + SUFFIX)


def _line(obj: dict[str, Any]) -> bytes:
    data = json.dumps(obj, separators=(",", ":")).encode()
    return b"%08x %s\n" % (zlib.crc32(data), data)


def _parse(line: bytes) -> dict[str, Any] | None:
    """The object of one whole line, or None if the line is damaged."""
    if len(line) < 10 or not line.endswith(b"\n") or line[8:9] != b" ":
        return None
    data = line[9:-1]
    try:
        if int(line[:8], 16) != zlib.crc32(data):
            return None
        obj = json.loads(data)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def read(path: str | os.PathLike) -> tuple[int, list[dict[str, Any]], int]:
    """``(base, records, good_bytes)`` of the journal at ``path``: records in
    order, up to the first damaged or out-of-order line; ``good_bytes`` is how
    much of the file they fill.  A missing journal is ``(0, [], 0)``."""
    try:
        with open(path, "rb") as fh:
            lines = fh.readlines()
    except FileNotFoundError:
        return 0, [], 0
    if not lines:
        return 0, [], 0
    head = _parse(lines[0])
    if head is None or not isinstance(head.get("base"), int):
        return 0, [], 0
    base = head["base"]
    good = len(lines[0])
    records = []
    for line in lines[1:]:
        rec = _parse(line)
        if rec is None or rec.get("seq") != base + len(records) + 1:
            break
        records.append(rec)
        good += len(line)
    return base, records, good


class JournalBusy(OSError):
    """Another process writes this journal (another instance of the same configuration file)."""


def _writer_lock(path: Path) -> int:
    """An exclusive lock on ``PATH.lock`` for as long as the writer lives (a process
    that dies drops it): two instances of one configuration file would interleave
    their changes."""
    import fcntl
    fd = os.open(str(path) + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise JournalBusy(f"{path} is written by another running instance of this configuration") from None
    return fd


def last_seq(base: int, records: list[dict[str, Any]]) -> int:
    return records[-1]["seq"] if records else base


class Journal:
    """The writer of one journal (one process writes it: the instance, or its supervisor)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._lock = _writer_lock(self.path)
        base, records, good = read(self.path)
        if not self.path.exists() or good == 0:
            self._write_whole(base, [])
        else:
            with open(self.path, "r+b") as fh:            # drop a torn or damaged tail
                if os.fstat(fh.fileno()).st_size != good:
                    fh.truncate(good)
                    os.fsync(fh.fileno())
        self.base = base
        self.seq = last_seq(base, records)
        self.size = good if good else self.path.stat().st_size
        self.synced = (self.size, self.seq)       # what is known to be on disk
        self.fh = open(self.path, "ab", buffering=BUFFER)

    def _write_whole(self, base: int, records: list[dict[str, Any]]) -> None:
        write_atomic(self.path, [_line({"base": base}), *map(_line, records)], fsync=True)
        fsync_dir(self.path.parent)

    def records(self, after: int = 0) -> list[dict[str, Any]]:
        """The records on disk with a sequence number above ``after``."""
        _, records, _ = read(self.path)
        return [r for r in records if r["seq"] > after]

    def append(self, payload: dict[str, Any], *, sync: bool = True) -> int:
        """Write one record (and fsync it unless ``sync`` is False: then :meth:`sync`
        before acknowledging it); its sequence number.  On OSError the journal is
        as before (the partial line is cut off)."""
        seq = self.seq + 1
        line = _line({"seq": seq, **payload})
        try:
            self.fh.write(line)             # (buffered: written out by sync(), or a Flusher's thread)
        except OSError:
            self._cut(self.size, self.seq)
            raise
        self.seq = seq
        self.size += len(line)
        if sync:
            self.sync()
        return seq

    def sync(self) -> None:
        """Make every record written so far durable (group commit); on OSError, the
        records since the last sync are cut off and must be taken back."""
        if self.synced == (self.size, self.seq):
            return
        try:
            self.fh.flush()
            os.fsync(self.fh.fileno())
        except OSError:
            self._cut(*self.synced)
            raise
        self.synced = (self.size, self.seq)

    def _cut(self, size: int, seq: int) -> None:
        try:
            try:
                self.fh.close()
            except OSError:
                pass                        # what it could not write is cut off anyway
            with open(self.path, "r+b") as fh:
                fh.truncate(size)
        finally:
            self.fh = open(self.path, "ab", buffering=BUFFER)
            self.size, self.seq = size, seq

    def compacted(self, through: int) -> None:
        """The files now hold every record up to ``through``: keep only the later ones."""
        self.fh.flush()
        keep = self.records(through)
        self.fh.close()
        self._write_whole(through, keep)
        self.base = through
        self.size = self.path.stat().st_size
        self.synced = (self.size, self.seq)
        self.fh = open(self.path, "ab", buffering=BUFFER)

    def close(self) -> None:
        self.fh.close()
        os.close(self._lock)


class MemoryJournal:
    """A journal kept in memory, where the configuration's directory cannot be
    written: changes are not durable, but a supervisor still brings restarted
    workers up to date from it (they read no journal file, so they start at 0)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.base = self.seq = self.size = 0
        self._records: list[dict[str, Any]] = []
        self.synced = (0, 0)

    def records(self, after: int = 0) -> list[dict[str, Any]]:
        return [r for r in self._records if r["seq"] > after]

    def append(self, payload: dict[str, Any], *, sync: bool = True) -> int:
        self.seq += 1
        self._records.append({"seq": self.seq, **payload})
        self.synced = (0, self.seq)
        return self.seq

    def sync(self) -> None:
        pass

    def close(self) -> None:
        pass


def open_journal(conf: str | os.PathLike, log) -> "Journal | MemoryJournal":
    """The writer of ``conf``'s journal; in memory (with a warning) when its directory
    cannot be written.  JournalBusy if another instance writes it."""
    path = journal_path(conf)
    try:
        return Journal(path)
    except JournalBusy:
        raise
    except OSError as e:
        log.warning("cannot write %s (%s): changes made while running will not survive a restart", path,
                    getattr(e, "strerror", None) or e)
        return MemoryJournal(path)


@dataclass(eq=False)
class _Batch:
    items: list[Any]
    done: bool = False


def _write_out(fh, box: dict[str, OSError]) -> None:
    try:
        fh.flush()
        os.fsync(fh.fileno())
    except (OSError, ValueError) as e:
        box["error"] = e if isinstance(e, OSError) else OSError(str(e))


@dataclass(eq=False)
class Flusher:
    """Group commit off the caller's thread (the forwarding loop): what was appended
    since the last :meth:`flush` is written out and fsynced by a helper thread
    (both release the GIL) while the caller goes on; the caller holds the replies
    until the batch's ``ready()`` says so.  One fsync at a time; batches flushed
    meanwhile share the next one.  If an fsync fails, every record not yet on
    disk is cut off and ``fail(items, error)`` is called with their items,
    newest first, to take the changes back."""

    journal: Journal
    fail: Callable[[list[Any], OSError], None]
    queued: list[_Batch] = field(default_factory=list)
    _round: tuple[list[_Batch], tuple[int, int], threading.Thread, dict] | None = None

    def flush(self, items: list[Any]) -> Callable[[], bool]:
        batch = _Batch(items)
        self.queued.append(batch)
        self.poll()
        return lambda: self.poll() or batch.done

    def busy(self) -> bool:
        return self._round is not None or bool(self.queued)

    def poll(self) -> None:
        """Finish the fsync under way if it is done; start the next one."""
        if self._round is not None:
            batches, target, thread, box = self._round
            if thread.is_alive():
                return
            self._round = None
            if "error" not in box:
                self.journal.synced = max(self.journal.synced, target)
                for b in batches:
                    b.done = True
            else:
                failed, self.queued = batches + self.queued, []
                self.journal._cut(*self.journal.synced)
                self.fail([item for b in reversed(failed) for item in reversed(b.items)], box["error"])
                for b in failed:
                    b.done = True
                return
        if self.queued:
            batches, self.queued = self.queued, []
            box: dict = {}
            thread = threading.Thread(target=_write_out, args=(self.journal.fh, box), daemon=True,
                                      name="journal-fsync")
            thread.start()
            self._round = (batches, (self.journal.size, self.journal.seq), thread, box)

    def wait(self) -> None:
        """Until nothing is waiting for an fsync (on stop)."""
        while self.busy():
            if self._round is not None:
                self._round[2].join()
            self.poll()
