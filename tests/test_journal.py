"""The change journal, change records and compaction into the files (sans I/O but files)."""
from __future__ import annotations

import ipaddress
import time

import pytest

from lwaftr.bindingtable.table import BindingTable
from lwaftr.config import journal
from lwaftr.config.errors import ConfigError
from lwaftr.config.ietf import XML, dumps_ietf
from lwaftr.config.load import load_config
from lwaftr.config.snabb import dump_snabb
from lwaftr.examples import example_config
from lwaftr.mgmt.persist import compact, load_persisted
from lwaftr.mgmt.service import ConfigService, table_bindings

SW = "/softwire-config/binding-table/softwire"
NEW = "{ ipv4 192.0.2.3; psid 0; b4-ipv6 2001:db8:1::d; br-address 2001:db8:ffff::1; port-set { psid-length 0; } }"


def service() -> ConfigService:
    cfg = example_config()
    return ConfigService(cfg, BindingTable.build(cfg.bindings))


def state(s: ConfigService) -> str:
    return s.text()


def test_journal_appends_reads_and_drops_a_torn_tail(tmp_path):
    p = tmp_path / "lw.conf.journal"
    j = journal.Journal(p)
    assert (j.base, j.seq) == (0, 0) and journal.read(p)[:2] == (0, [])
    assert j.append({"sw": [[1, 0, None]]}) == 1
    assert j.append({"req": {"op": "set", "path": "/x", "value": "1"}}) == 2
    j.close()
    good = p.stat().st_size
    with open(p, "ab") as fh:                       # a crash half way through a third record
        fh.write(b'0badc0de {"seq":3,"sw":[[2,0,nu')
    base, recs, size = journal.read(p)
    assert base == 0 and [r["seq"] for r in recs] == [1, 2] and size == good
    j = journal.Journal(p)                          # the writer cuts the torn line off ...
    assert j.seq == 2 and p.stat().st_size == good
    assert j.append({"sw": [[2, 0, None]]}) == 3    # ... and goes on after the last whole record
    j.close()
    # A record whose checksum fails ends the journal there.
    lines = p.read_bytes().splitlines(keepends=True)
    lines[2] = lines[2].replace(b'"value":"1"', b'"value":"2"')
    p.write_bytes(b"".join(lines))
    assert [r["seq"] for r in journal.read(p)[1]] == [1]


def test_compacted_keeps_only_later_records(tmp_path):
    j = journal.Journal(tmp_path / "j")
    for i in range(5):
        j.append({"sw": [[i, 0, None]]})
    j.compacted(3)
    base, recs, _ = journal.read(tmp_path / "j")
    assert base == 3 and [r["seq"] for r in recs] == [4, 5] and j.seq == 5
    assert j.append({"sw": []}) == 6
    assert [r["seq"] for r in j.records(after=4)] == [5, 6]


def test_records_say_what_is_and_replay_is_idempotent():
    s = service()
    r = s.handle({"op": "add", "path": SW, "value": NEW})
    ip3 = int(ipaddress.IPv4Address("192.0.2.3"))
    assert r.record == {"sw": [[ip3, 0, [0, 0, ipaddress.IPv6Address("2001:db8:1::d").packed.hex(),
                                            ipaddress.IPv6Address("2001:db8:ffff::1").packed.hex()]]]}
    assert r.undo == {"sw": [[ip3, 0, None]]}
    r2 = s.handle({"op": "batch", "requests": [
        {"op": "set", "path": f"{SW}[ipv4=192.0.2.1][psid=1]/b4-ipv6", "value": "2001:db8:1::99"},
        {"op": "remove", "path": f"{SW}[ipv4=192.0.2.2][psid=0]"}]})
    assert len(r2.record["sw"]) == 2 and len(r2.undo["sw"]) == 2
    after = state(s)
    # Replayed on the example: the same; replayed again: still the same.
    t = service()
    for rec in (r.record, r2.record, r.record, r2.record):
        assert t.apply_record(rec).reply["ok"]
    assert state(t) == after
    # The undo records put it back, in reverse order.
    for rec in (r2.undo, r.undo):
        assert s.apply_record(rec).reply["ok"]
    assert state(s) == service().text()
    # A policy change: the request as record, the old settings as undo; nothing recorded if refused.
    r3 = s.handle({"op": "set", "path": "/softwire-config/external-interface/mtu", "value": "1500"})
    assert r3.record == {"req": {"op": "set", "path": "/softwire-config/external-interface/mtu", "value": "1500"}}
    assert "mtu 1460;" in r3.undo["rest"]
    r4 = s.handle({"op": "set", "path": "/softwire-config/external-interface/mtu", "value": "big"})
    assert not r4.reply["ok"] and r4.record is None
    r5 = s.handle({"op": "get", "path": "/softwire-config/external-interface/mtu"})
    assert r5.record is None


def test_a_port_set_layout_change_replays(tmp_path):
    """A record changing every softwire of one address to a new layout applies
    whatever the order of its entries."""
    s = service()
    ip1 = int(ipaddress.IPv4Address("192.0.2.1"))
    recs = {"sw": [[ip1, p, None] for p in range(16) if s.editor.get(ip1, p) is not None]}
    recs["sw"] += [[ip1, 1, [6, 0, ipaddress.IPv6Address("2001:db8:1::77").packed.hex(),
                             ipaddress.IPv6Address("2001:db8:ffff::1").packed.hex()]]]
    assert s.apply_record(recs).reply["ok"]
    assert s.editor.get(ip1, 1).psid_length == 6 and s.editor.get(ip1, 2) is None


@pytest.mark.parametrize("fmt", ["snabb", "ietf-xml", "ietf-table-file"])
def test_load_persisted_and_compact(tmp_path, fmt):
    conf = tmp_path / "lw.conf"
    cfg = example_config()
    if fmt == "snabb":
        conf.write_text(dump_snabb(cfg))
    elif fmt == "ietf-xml":
        conf.write_text(dumps_ietf(cfg, XML))
    else:
        from lwaftr.bindingtable.textformat import dumps_text
        (tmp_path / "table.txt").write_text(dumps_text(cfg.bindings))
        conf.write_text(dumps_ietf(cfg, XML, binding_table_file="table.txt"))
    # What an instance does: changes through the service, each record journalled.
    cfg0, table, seq = load_persisted(conf)
    assert seq == 0
    s = ConfigService(cfg0, table)
    j = journal.Journal(journal.journal_path(conf))
    for req in ({"op": "add", "path": SW, "value": NEW},
                {"op": "remove", "path": f"{SW}[ipv4=192.0.2.2][psid=0]"},
                {"op": "set", "path": f"{SW}[ipv4=192.0.2.1][psid=1]/b4-ipv6", "value": "2001:db8:1::99"},
                {"op": "set", "path": "/softwire-config/external-interface/mtu", "value": "1480"}):
        r = s.handle(req)
        assert r.reply["ok"], r.reply
        if r.config is not None:
            s.adopt(r.config, s.table)
        j.append(r.record)
    want = table_bindings(s.table)
    # A restart: the file and its journal.
    cfg1, t1, seq = load_persisted(conf)
    assert seq == 4 and table_bindings(t1) == want and cfg1.external.mtu == 1480
    # Compaction through record 3: the files hold records 1-3; record 4 stays in the journal.
    compact(conf, 3)
    j.compacted(3)
    assert [r["seq"] for r in journal.read(journal.journal_path(conf))[1]] == [4]
    on_disk = load_config(conf)
    assert on_disk.external.mtu == 1460 and on_disk.bindings == want
    cfg2, t2, seq = load_persisted(conf)
    assert seq == 4 and table_bindings(t2) == want and cfg2.external.mtu == 1480
    # A crash between the files' rewrite and the journal's: records already in the files replay harmlessly.
    compact(conf, 4)
    cfg3, t3, _ = load_persisted(conf)
    assert table_bindings(t3) == want and cfg3.external.mtu == 1480 and load_config(conf).external.mtu == 1480
    j.close()


def test_a_record_that_does_not_replay_is_a_clear_error(tmp_path):
    conf = tmp_path / "lw.conf"
    conf.write_text(dump_snabb(example_config()))
    j = journal.Journal(journal.journal_path(conf))
    ip1 = int(ipaddress.IPv4Address("192.0.2.1"))
    j.append({"sw": [[ip1, 99, [4, 0, "00" * 16, "00" * 16]]]})        # PSID 99 does not fit 4 bits
    j.close()
    with pytest.raises(ConfigError, match=r"lw\.conf\.journal.*record 1"):
        load_persisted(conf)


def test_group_commit_and_a_failed_fsync(tmp_path, monkeypatch):
    """Records written together are made durable by one fsync; if it fails, they
    are cut off (the owner takes the changes back) and the journal goes on."""
    p = tmp_path / "j"
    j = journal.Journal(p)
    j.append({"sw": [[1, 0, None]]})
    calls = []
    real = journal.os.fsync
    monkeypatch.setattr(journal.os, "fsync", lambda fd: calls.append(fd) or real(fd))
    for i in range(2, 5):
        j.append({"sw": [[i, 0, None]]}, sync=False)
    assert calls == [] and j.synced[1] == 1
    j.sync()
    assert len(calls) == 1 and j.synced[1] == 4
    j.sync()
    assert len(calls) == 1                                  # nothing new: no fsync

    def broken(fd):
        raise OSError(5, "Input/output error")
    monkeypatch.setattr(journal.os, "fsync", broken)
    j.append({"sw": [[5, 0, None]]}, sync=False)
    j.append({"sw": [[6, 0, None]]}, sync=False)
    with pytest.raises(OSError):
        j.sync()
    assert j.seq == 4 and [r["seq"] for r in journal.read(p)[1]] == [1, 2, 3, 4]
    monkeypatch.setattr(journal.os, "fsync", real)
    assert j.append({"sw": [[7, 0, None]]}) == 5
    assert [r["sw"][0][0] for r in journal.read(p)[1]] == [1, 2, 3, 4, 7]
    j.close()


def test_flusher_fsyncs_aside_and_takes_back_on_failure(tmp_path, monkeypatch):
    """Batches flushed while an fsync runs share the next one; a failed fsync fails
    every batch not yet on disk, newest item first, and cuts their records off."""
    import threading
    p = tmp_path / "j"
    j = journal.Journal(p)
    failed: list = []
    f = journal.Flusher(j, lambda items, e: failed.append((items, str(e))))
    gate = threading.Event()
    real = journal.os.fsync
    monkeypatch.setattr(journal.os, "fsync", lambda fd: (gate.wait(10), real(fd)))
    j.append({"sw": [[1, 0, None]]}, sync=False)
    r1 = f.flush(["a"])
    j.append({"sw": [[2, 0, None]]}, sync=False)
    r2 = f.flush(["b"])
    assert not r1() and not r2() and f.busy()
    gate.set()
    deadline = time.time() + 10
    while not (r1() and r2()):
        assert time.time() < deadline
        time.sleep(0.001)
    assert j.synced[1] == 2 and not f.busy() and failed == []

    def broken(fd):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(journal.os, "fsync", broken)
    j.append({"sw": [[3, 0, None]]}, sync=False)
    r3 = f.flush(["c1", "c2"])
    f.wait()
    assert r3() and failed == [(["c2", "c1"], "[Errno 28] No space left on device")]
    assert j.seq == 2 and [r["seq"] for r in journal.read(p)[1]] == [1, 2]
    j.close()


def test_a_whole_configuration_record_replays(tmp_path):
    """load-config (NETCONF's policy changes) is journalled whole and replays to the same."""
    conf = tmp_path / "lw.conf"
    conf.write_text(dump_snabb(example_config()))
    cfg0, table, _ = load_persisted(conf)
    s = ConfigService(cfg0, table)
    text = s.text().replace("mtu 1460;", "mtu 1440;").replace("2001:db8:1::c", "2001:db8:1::77")
    r = s.handle({"op": "load-config", "text": text})
    assert r.reply["ok"] and r.record == {"load": text} and r.undo is None
    j = journal.Journal(journal.journal_path(conf))
    j.append(r.record)
    j.close()
    cfg1, t1, seq = load_persisted(conf)
    assert seq == 1 and cfg1.external.mtu == 1440
    assert "2001:db8:1::77" in ConfigService(cfg1, t1).text()


def test_one_writer_at_a_time(tmp_path):
    p = tmp_path / "lw.conf.journal"
    j = journal.Journal(p)
    with pytest.raises(journal.JournalBusy, match="another running instance"):
        journal.Journal(p)
    j.close()
    journal.Journal(p).close()


def test_a_directory_that_cannot_be_written_keeps_the_journal_in_memory(tmp_path, caplog):
    import logging
    log = logging.getLogger("test.journal")
    conf = tmp_path / "gone" / "lw.conf"             # (as root, a missing directory: nothing can be written)
    j = journal.open_journal(conf, log)
    assert isinstance(j, journal.MemoryJournal) and "will not survive a restart" in caplog.text
    assert j.append({"sw": [[1, 0, None]]}) == 1 and j.append({"sw": [[2, 0, None]]}, sync=False) == 2
    assert [r["seq"] for r in j.records(after=1)] == [2] and j.synced[1] == 2
    ok = journal.open_journal(tmp_path / "lw.conf", log)
    assert isinstance(ok, journal.Journal)
    with pytest.raises(journal.JournalBusy):
        journal.open_journal(tmp_path / "lw.conf", log)
    ok.close()
