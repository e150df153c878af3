"""The persisted configuration: the files plus their journal, loaded and compacted.

:func:`load_persisted` is what an instance runs: the configuration file (and
its binding table) with every journal record replayed (see
:mod:`lwaftr.config.journal`), at start and on reload.

Compaction folds the journal into the files, in a child process so that
neither forwarding nor the control socket waits for it
(``python -m lwaftr.mgmt.persist CONF THROUGH``): the files are rewritten
atomically (temporary file, fsync, rename) with records up to THROUGH
replayed, the compiled table beside them is refreshed, and then the journal's
writer (:class:`Compactor`) drops those records.  Where the softwires go:

* a snabb-softwire-v3 file: the whole file, written by ``dump_snabb``;
* an RFC 8676 file with its entries inline: the whole file (``dumps_ietf``);
* an RFC 8676 file naming a ``binding-table-file``: that table (text, or
  compiled ``.lwbt``), and the configuration file only if something else
  changed (its reference is then written as an absolute path).
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from lwaftr.bindingtable import compiled
from lwaftr.bindingtable.table import BindingTable
from lwaftr.config import journal
from lwaftr.config.errors import ConfigError
from lwaftr.config.model import Bindings, Config
from lwaftr.fileutil import fsync_dir, write_atomic
from lwaftr.mgmt.service import ConfigService, table_bindings

log = logging.getLogger("lwaftr.persist")

#: Compact once the journal is bigger than this.
COMPACT_BYTES = 16 << 20


def replay(svc: ConfigService, records: list[dict], where: str) -> None:
    """Apply journal ``records`` to ``svc`` (ConfigError naming the record if one fails)."""
    for rec in records:
        r = svc.handle({"op": "replay", "records": [rec]})
        if not r.reply["ok"]:
            raise ConfigError(f"record {rec.get('seq')} cannot be replayed: {r.reply['error']}", file=where)
        if r.config is not None:
            svc.adopt(r.config, r.table if r.table is not None else svc.table)


def load_persisted(conf: str | os.PathLike, *, through: int | None = None
                   ) -> tuple[Config, BindingTable, int]:
    """``(config, table, seq)``: ``conf`` with its journal replayed (up to
    ``through``), and the sequence number of the last record replayed.  The
    config's bindings are empty (the table holds them) but for their version."""
    from lwaftr.config.load import load_table
    jpath = journal.journal_path(conf)
    base, records, _ = journal.read(jpath)            # before the files: see lwaftr.config.journal
    if through is not None:
        records = [r for r in records if r["seq"] <= through]
    cfg, table = load_table(conf, private=True)
    if not records:
        return cfg, table, base
    svc = ConfigService(cfg, table)
    replay(svc, records, str(jpath))
    b = Bindings.empty()
    b.version = svc.version
    return replace(svc.config, bindings=b), svc.table, journal.last_seq(base, records)


def compact(conf: str | os.PathLike, through: int) -> None:
    """Rewrite the files of ``conf`` with journal records up to ``through`` folded in."""
    from lwaftr.bindingtable.textformat import dumps_text
    from lwaftr.config import ietf
    from lwaftr.config.load import config_format, load_table
    from lwaftr.config.snabb import dump_snabb
    conf = Path(conf)
    cfg0, table = load_table(conf, private=True)
    cfg, table, _ = load_persisted(conf, through=through)
    bindings = table_bindings(table)
    bindings.version = cfg.bindings.version
    full = replace(cfg, bindings=bindings, binding_table_file=cfg0.binding_table_file, source=str(conf))
    fmt = config_format(conf)
    ref = cfg0.binding_table_file
    if fmt == ietf.SNABB:
        write_atomic(conf, dump_snabb(full).encode(), fsync=True)
    elif ref is None:
        write_atomic(conf, ietf.dumps_ietf(full, fmt).encode(), fsync=True)
    else:
        tpath = Path(ref)
        if tpath.suffix == compiled.SUFFIX:
            compiled.save(table, tpath)
        else:
            write_atomic(tpath, dumps_text(bindings).encode(), fsync=True)
        fsync_dir(tpath.parent)
        empty = Bindings.empty()
        if replace(cfg, bindings=empty) != replace(cfg0, bindings=empty):
            write_atomic(conf, ietf.dumps_ietf(replace(full, bindings=empty), fmt, binding_table_file=str(tpath))
                         .encode(), fsync=True)
    fsync_dir(conf.parent)
    try:
        load_table(conf, config=full if ref is None else None)     # refresh the compiled table and rest
    except OSError:
        pass


class Compactor:
    """Starts a compaction when the journal has grown, and trims the journal when it is done."""

    def __init__(self, conf: str | os.PathLike, jr: journal.Journal, threshold: int = COMPACT_BYTES) -> None:
        self.conf, self.journal, self.threshold = str(conf), jr, threshold
        self.proc: subprocess.Popen | None = None
        self.through = 0

    def start(self) -> None:
        """Compact now (unless one is under way or there is nothing to fold in)."""
        through = self.journal.synced[1]         # only what is acknowledged may reach the files
        if self.proc is not None or through == self.journal.base:
            return
        self.through = through
        self.proc = subprocess.Popen([sys.executable, "-m", "lwaftr.mgmt.persist", self.conf, str(self.through),
                                      str(os.getpid())],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        log.info("compacting the journal of %s (through record %d)", self.conf, self.through)

    def poll(self) -> None:
        """Call often: starts one when due, finishes one that is done."""
        if self.proc is None:
            if self.journal.size > self.threshold:
                self.start()
            return
        if self.proc.poll() is None:
            return
        p, self.proc = self.proc, None
        err = p.stderr.read().strip() if p.stderr else ""
        p.stderr.close()
        if p.returncode != 0:
            log.error("compaction of %s failed (the journal is kept): %s", self.conf, err or f"exit {p.returncode}")
            return
        self.journal.compacted(self.through)
        log.info("journal of %s compacted through record %d", self.conf, self.through)

    def stop(self) -> None:
        """End a compaction under way (on stop; the journal stays whole, so nothing is lost)."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            if self.proc.stderr:
                self.proc.stderr.close()
            self.proc = None


def _die_with_parent(parent: int) -> None:
    """A compaction outliving its instance could race the next one's: it ends with its parent."""
    import ctypes
    import signal
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))      # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:
        sys.exit(1)


def main(argv: list[str]) -> int:
    """``CONF THROUGH [PARENT-PID]``."""
    if len(argv) > 2:
        _die_with_parent(int(argv[2]))
    try:
        compact(argv[0], int(argv[1]))
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 2
    except (OSError, ValueError) as e:
        print(f"{argv[0]}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
