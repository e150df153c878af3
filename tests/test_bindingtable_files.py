"""Binding-table files: the text format, the compiled (mappable) form, compile-configuration."""
from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import os
import re
import struct
from pathlib import Path

import numpy as np
import pytest

from lwaftr.bindingtable import compiled as C
from lwaftr.bindingtable.table import BindingTable
from lwaftr.bindingtable.textformat import dump_text, dumps_text, is_text_bindings, load_text, loads_text
from lwaftr.cli import compile_configuration as cc
from lwaftr.config.errors import ConfigError
from lwaftr.config.model import Bindings
from lwaftr.config.snabb import dump_snabb
from lwaftr.examples import example_config

ROOT = Path(__file__).resolve().parent.parent
BRS = ["2001:db8:ffff::1", "2001:db8:ffff::2", "2001:db8:ffff::3"]


def generate(n: int, per: int = 16, plen: int = 4, rsv: int = 0) -> Bindings:
    """``n`` softwires, ``per`` per IPv4 address, BR addresses in rotation."""
    i = np.arange(n)
    b4 = np.zeros((n, 16), np.uint8)
    b4[:, :4] = [0x20, 0x01, 0x0D, 0xB8]
    b4[:, 8:] = i.astype(">u8").view(np.uint8).reshape(n, 8)
    return Bindings(
        ipv4=(np.uint32(0x0A000000) + i // per).astype(np.uint32), psid=(i % per).astype(np.uint16),
        psid_length=np.full(n, plen, np.uint8), reserved_ports_bit_count=np.full(n, rsv, np.uint8),
        b4_ipv6=b4, br_index=(i % len(BRS)).astype(np.uint16),
        br_addresses=[ipaddress.IPv6Address(a).packed for a in BRS], line=np.zeros(n, np.int32))


def mixed() -> Bindings:
    """A small table with reserved bits, whole addresses and several BRs."""
    text = """
    # comment line, then a blank one

    192.0.2.1 3 6 2001:db8:1::3 2001:db8:ffff::1
    192.0.2.1 4 6 2001:db8:1::4 2001:db8:ffff::1   # trailing comment
    192.0.2.2\t0\t0\t2001:db8:1::c\t2001:db8:ffff::2
    198.51.100.7 1 4 2001:db8:2::1 2001:db8:ffff::3 2
    198.51.100.7 15 4 2001:db8:2::f 2001:DB8:FFFF::3 2
    """
    return loads_text(text)


def sample_ports(b: Bindings, rng: np.random.Generator, k: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """(ipv4, port) probes: ports inside each softwire's set, plus random ones and unmanaged addresses."""
    idx = rng.integers(0, len(b), k * len(b))
    a = b.reserved_ports_bit_count[idx].astype(np.int64)
    shift = 16 - b.psid_length[idx].astype(np.int64) - a
    inside = (b.psid[idx].astype(np.int64) << shift) + rng.integers(0, 1 << 16, idx.size) % (1 << shift)
    top = 1 + rng.integers(0, 1 << 16, idx.size) % np.maximum((1 << a) - 1, 1)    # A > 0: not reserved
    inside |= np.where(a > 0, top << (16 - a), 0)
    ips = np.concatenate([b.ipv4[idx], b.ipv4[idx], b.ipv4[idx] + 1 + np.uint32(1 << 24)])
    ports = np.concatenate([inside, rng.integers(0, 1 << 16, idx.size), inside])
    return ips.astype(np.uint32), ports


# --- text format ---------------------------------------------------------------------------------

def test_text_round_trip_small(tmp_path):
    b = mixed()
    assert len(b) == 5 and b.line.tolist() == [4, 5, 6, 7, 8]
    assert b.reserved_ports_bit_count.tolist() == [0, 0, 0, 2, 2]
    assert len(b.br_addresses) == 3          # "2001:DB8:FFFF::3" is the same address
    p = tmp_path / "t.txt"
    dump_text(b, p)
    assert load_text(p) == b
    assert loads_text(dumps_text(b, header=False)) == b


def test_text_round_trip_big(tmp_path):
    b = generate(20_000, per=64, plen=6, rsv=2)
    p = tmp_path / "big.bt"
    dump_text(b, p)
    back = load_text(p)
    assert back == b
    assert back.line[0] == 2 and back.line[-1] == 20_001     # line 1 is the header comment


def test_text_empty_and_comments_only():
    assert len(loads_text("")) == 0
    assert len(loads_text("# nothing\n\n   \n")) == 0


def test_text_crlf_bom_and_utf8_comment():
    b = loads_text("\ufeff# Straße\r\n192.0.2.1 0 0 2001:db8::1 2001:db8::ff\r\n".encode())
    assert len(b) == 1 and b.line.tolist() == [2]


def test_documentation_examples_load():
    md = (ROOT / "docs" / "binding-table-format.md").read_text()
    block = re.search(r"```\n(# Two subscribers.*?)```", md, re.S).group(1)
    assert len(loads_text(block)) == 4
    import lwaftr.bindingtable.textformat as tf
    block = re.search(r"::\n\n(.*?)\n\n\*", tf.__doc__, re.S).group(1)
    assert len(loads_text(block)) == 3


GOOD = "192.0.2.1 3 6 2001:db8:1::3 2001:db8:ffff::1"

BAD_LINES = [
    # (bad line, field, words in the message)
    ("192.0.2.256 3 6 2001:db8:1::9 2001:db8:ffff::1", "IPV4", "bad IPv4 address '192.0.2.256'"),
    ("192.0.2 3 6 2001:db8:1::9 2001:db8:ffff::1", "IPV4", "bad IPv4 address"),
    ("192.0.2.9 -1 6 2001:db8:1::9 2001:db8:ffff::1", "PSID", "expected uint16"),
    ("192.0.2.9 70000 16 2001:db8:1::9 2001:db8:ffff::1", "PSID", "out of range"),
    ("192.0.2.9 64 6 2001:db8:1::9 2001:db8:ffff::1", "PSID", "psid 64 does not fit in PSID_LENGTH 6"),
    ("192.0.2.9 1 17 2001:db8:1::9 2001:db8:ffff::1", "PSID_LENGTH", "17 is out of range 0..16"),
    ("192.0.2.9 1 6 2001:db8:1::9::1 2001:db8:ffff::1", "B4_IPV6", "bad IPv6 address"),
    ("192.0.2.9 1 6 2001:db8:1::9 2001:db8:ffff::x", "BR_IPV6", "bad IPv6 address"),
    ("192.0.2.9 1 6 2001:db8:1::9 2001:db8:ffff::1 11", "RESERVED_BITS", "exceeds 16"),
    ("192.0.2.9 1 6 2001:db8:1::9 2001:db8:ffff::1 x", "RESERVED_BITS", "expected uint8"),
    ("192.0.2.9 1 6", "B4_IPV6", "expected 5 or 6 fields"),
    ("192.0.2.9", "PSID", "got 1"),
    ("192.0.2.9 1 6 2001:db8:1::9 2001:db8:ffff::1 0 extra", "field 7", "unexpected 'extra'"),
    ("192.0.2.1 3 6 2001:db8:1::9 2001:db8:ffff::1", "IPV4 PSID",
     "duplicate softwire 192.0.2.1 psid 3 (first at line 1)"),
    ("192.0.2.1 9 5 2001:db8:1::9 2001:db8:ffff::1", "PSID_LENGTH", "overlapping port sets for 192.0.2.1"),
    ("192.0.2.1 9 6 2001:db8:1::9 2001:db8:ffff::1 1", "PSID_LENGTH", "overlapping port sets"),
    ("192.0.2.9 1 6 2001:db8:1::\u00e9 2001:db8:ffff::1", "B4_IPV6", "non-ASCII"),
]


@pytest.mark.parametrize("bad,field,words", BAD_LINES,
                         ids=[f"{f}-{i}" for i, (_, f, _) in enumerate(BAD_LINES)])
def test_bad_line_names_file_line_and_field(tmp_path, bad, field, words):
    p = tmp_path / "bt.txt"
    p.write_text(f"{GOOD}\n# comment\n\n{bad}   # the bad one\n192.0.2.200 0 0 2001:db8::200 2001:db8::1\n")
    with pytest.raises(ConfigError) as ei:
        load_text(p)
    e = ei.value
    assert (e.file, e.line, e.path) == (str(p), 4, field), str(e)
    assert words in e.message
    assert str(e).startswith(f"{p}:4: {field}: ")


@pytest.mark.parametrize("bad,field,words", [BAD_LINES[i] for i in (0, 4, 6, 10, 12)] + [
    ("10.0.0.0 0 4 2001:db8:1::9 2001:db8:ffff::1", "IPV4 PSID", "duplicate softwire 10.0.0.0 psid 0"),
    ("10.0.0.0 20 5 2001:db8:1::9 2001:db8:ffff::1", "PSID_LENGTH", "overlapping port sets for 10.0.0.0"),
])
def test_bad_line_in_big_file(tmp_path, bad, field, words):
    """An error at line 50,000 of a 100,000-line file is reported at line 50,000."""
    lines = dumps_text(generate(100_000, per=16, plen=4), header=False).splitlines()
    lines[49_999] = bad
    p = tmp_path / "big.txt"
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError) as ei:
        load_text(p)
    assert (ei.value.line, ei.value.path) == (50_000, field), str(ei.value)
    assert words in ei.value.message


def test_earliest_bad_line_wins():
    text = (f"{GOOD}\n192.0.2.9 1 6 2001:db8:1::9 2001:db8:ffff::1 x\n"
            "192.0.2.256 3 6 2001:db8:1::3 2001:db8:ffff::1\n1.2.3.4\n")
    with pytest.raises(ConfigError) as ei:
        loads_text(text, "t")
    assert (ei.value.line, ei.value.path) == (2, "RESERVED_BITS")
    with pytest.raises(ConfigError) as ei:
        loads_text("1.2.3.4 0 0\n" + text, "t")
    assert (ei.value.line, ei.value.path) == (1, "B4_IPV6")


def test_unreadable_text_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_text(tmp_path / "missing.txt")


def test_is_text_bindings(tmp_path):
    a = tmp_path / "a.conf"
    a.write_text(f"# header\n\n  {GOOD}\n")
    s = tmp_path / "s.conf"
    s.write_text(dump_snabb(example_config()))
    assert is_text_bindings(a) and not is_text_bindings(s)
    assert is_text_bindings(tmp_path / "whatever.bt") and is_text_bindings(tmp_path / "x.TXT")


# --- compiled form -------------------------------------------------------------------------------

def assert_same_table(t: BindingTable, ref: BindingTable, b: Bindings) -> None:
    assert t.count == ref.count == len(b)
    for k in ("addr_tab", "sw_tab", "br_tab"):
        assert np.array_equal(getattr(t, k), getattr(ref, k)), k
    ips, ports = sample_ports(b, np.random.default_rng(1))
    assert np.array_equal(t.lookup_many(ips, ports), ref.lookup_many(ips, ports))
    assert (ref.lookup_many(ips, ports)[: ips.size // 3] >= 0).all()


@pytest.mark.parametrize("mmap", [True, False])
def test_compiled_round_trip(tmp_path, mmap):
    for b in (mixed(), generate(5_000, per=8, plen=3, rsv=1), Bindings.empty()):
        ref = BindingTable.build(b)
        p = tmp_path / "t.lwbt"
        size = C.save(ref, p)
        assert size == p.stat().st_size and size % C.ALIGN == 0
        t = C.load(p, mmap=mmap)
        if len(b):
            assert_same_table(t, ref, b)
        assert t.addr_tab.flags.writeable is not mmap
        for i in range(min(len(b), 5)):
            k, a = int(b.psid_length[i]), int(b.reserved_ports_bit_count[i])
            port = (int(b.psid[i]) << (16 - k - a)) | (0x8000 if a else 0)
            assert t.lookup(int(b.ipv4[i]), port) == (bytes(b.b4_ipv6[i]), b.br_addresses[int(b.br_index[i])])


def test_engine_runs_on_a_mapped_table(tmp_path):
    """The data plane accepts the read-only mapped arrays and behaves the same."""
    from lwaftr.dataplane.engine import Engine
    from lwaftr.examples import example_traffic
    cfg = example_config()
    src = tmp_path / "ex.txt"
    dump_text(cfg.bindings, src)
    mapped = C.compile_cached(src, load_text)
    assert not mapped.sw_tab.flags.writeable
    plain, fromfile = Engine(cfg), Engine(cfg, table=mapped)
    for _, side, frame in example_traffic():
        v4, v6 = ([frame], []) if side == "v4" else ([], [frame])
        assert plain.process_frames(v4, v6, 0.0) == fromfile.process_frames(v4, v6, 0.0)


def _flip(p: Path, offset: int) -> None:
    data = bytearray(p.read_bytes())
    data[offset] ^= 0x40
    p.write_bytes(data)


def test_corrupt_payload_detected(tmp_path):
    b = generate(2_000)
    p = tmp_path / "t.lwbt"
    C.save(BindingTable.build(b), p)
    h = C.read_header(p)
    _flip(p, h.arrays["sw_tab"]["offset"] + 1000)
    with pytest.raises(C.CompiledTableError, match="payload checksum") as ei:
        C.load(p)
    assert ei.value.file == str(p) and isinstance(ei.value, ConfigError)
    C.load(p, verify=False)                   # header still fine: only the payload check sees it


@pytest.mark.parametrize("offset", [0, 9, 17, 30])
def test_corrupt_header_detected_without_verify(tmp_path, offset):
    p = tmp_path / "t.lwbt"
    C.save(BindingTable.build(mixed()), p)
    _flip(p, offset)
    with pytest.raises(C.CompiledTableError):
        C.load(p, verify=False)


def test_truncated_file_detected(tmp_path):
    p = tmp_path / "t.lwbt"
    C.save(BindingTable.build(generate(1_000)), p)
    data = p.read_bytes()
    for n in (len(data) - 1, len(data) // 2, 100, 10, 0):
        p.write_bytes(data[:n])
        with pytest.raises(C.CompiledTableError, match="truncated"):
            C.load(p)
    p.write_bytes(data + b"\0")
    with pytest.raises(C.CompiledTableError, match="trailing"):
        C.load(p)
    p.write_bytes(b"not a table at all, just some text")
    with pytest.raises(C.CompiledTableError, match="magic"):
        C.load(p)


def _set_version(p: Path, version: int) -> None:
    data = bytearray(p.read_bytes())
    struct.pack_into("<I", data, 8, version)
    p.write_bytes(data)


def test_version_mismatch_detected(tmp_path):
    p = tmp_path / "t.lwbt"
    C.save(BindingTable.build(mixed()), p)
    _set_version(p, C.FORMAT_VERSION + 1)
    with pytest.raises(C.CompiledTableError, match="format version"):
        C.load(p, verify=False)


# --- compile_cached ------------------------------------------------------------------------------

@pytest.fixture
def source(tmp_path) -> tuple[Path, Bindings]:
    b = generate(3_000, per=4, plen=2)
    p = tmp_path / "bindings.txt"
    dump_text(b, p)
    return p, b


def _calls(loader):
    calls = []

    def wrapped(path: str) -> Bindings:
        calls.append(path)
        return loader(path)
    return wrapped, calls


def test_compile_cached_builds_then_maps(source):
    src, b = source
    ref = BindingTable.build(b)
    loader, calls = _calls(load_text)
    out = C.compiled_path(src)
    assert out.name == "bindings.txt.lwbt" and not out.exists()
    assert_same_table(C.compile_cached(src, loader), ref, b)
    assert len(calls) == 1 and out.exists()
    h = C.read_header(out)
    assert h.source == {"name": src.name, "size": src.stat().st_size, "mtime_ns": src.stat().st_mtime_ns}
    ino = out.stat().st_ino
    t = C.compile_cached(src, loader)
    assert len(calls) == 1 and out.stat().st_ino == ino        # mapped, not rebuilt
    assert not t.addr_tab.flags.writeable
    assert_same_table(t, ref, b)
    assert not list(src.parent.glob(".*.tmp"))                  # no temporary left behind


def _rebuilt(src: Path, b: Bindings, damage) -> None:
    loader, calls = _calls(load_text)
    C.compile_cached(src, loader)
    damage(C.compiled_path(src))
    t = C.compile_cached(src, loader)
    assert len(calls) == 2, "not rebuilt"
    assert_same_table(t, BindingTable.build(b), b)
    C.load(C.compiled_path(src))                                # the file is good again
    C.compile_cached(src, loader)
    assert len(calls) == 2


def test_corrupt_compiled_file_rebuilt(source):
    _rebuilt(*source, lambda p: _flip(p, C.read_header(p).payload_offset + 5))


def test_truncated_compiled_file_rebuilt(source):
    _rebuilt(*source, lambda p: p.write_bytes(p.read_bytes()[:-100]))


def test_other_version_rebuilt(source):
    _rebuilt(*source, lambda p: _set_version(p, 99))


def test_other_layout_rebuilt(source, monkeypatch):
    src, b = source
    C.compile_cached(src, load_text)
    monkeypatch.setattr(C, "_layout_cache", ["0badc0de"])
    with pytest.raises(C.CompiledTableError, match="layout"):
        C.load(C.compiled_path(src))
    loader, calls = _calls(load_text)
    C.compile_cached(src, loader)
    assert len(calls) == 1 and C.read_header(C.compiled_path(src)).layout == "0badc0de"


def test_stale_compiled_file_rebuilt(source):
    src, b = source
    C.compile_cached(src, load_text)
    out = C.compiled_path(src)
    st = out.stat()
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))    # touch: source newer
    loader, calls = _calls(load_text)
    C.compile_cached(src, loader)
    assert len(calls) == 1 and out.stat().st_ino != st.st_ino
    assert C.read_header(out).source["mtime_ns"] == src.stat().st_mtime_ns


def test_changed_source_rebuilt(source):
    src, b = source
    C.compile_cached(src, load_text)
    b2 = generate(4_000, per=4, plen=2)
    dump_text(b2, src)
    assert_same_table(C.compile_cached(src, load_text), BindingTable.build(b2), b2)


def test_compile_cached_progress(source, capsys):
    src, _ = source
    C.compile_cached(src, load_text, progress=True)
    err = capsys.readouterr().err
    assert "compiling bindings.txt" in err and "3000 softwires" in err
    os.utime(src)
    C.compile_cached(src, load_text)                          # small table: quiet by default
    assert capsys.readouterr().err == ""


def test_compile_cached_bad_source(tmp_path):
    p = tmp_path / "bad.txt"
    p.write_text(f"{GOOD}\n1.2.3.4 x 0 ::1 ::2\n")
    with pytest.raises(ConfigError) as ei:
        C.compile_cached(p, load_text)
    assert ei.value.line == 2 and not C.compiled_path(p).exists()


# --- lwaftr compile-configuration ----------------------------------------------------------------

def _run(conf: Path, out: Path | None = None, **kw) -> int:
    ns = argparse.Namespace(conf=str(conf), out=None if out is None else str(out), quiet=False, progress=None)
    for k, v in kw.items():
        setattr(ns, k, v)
    return cc.run(ns)


def test_cli_compiles_text_table(source, capsys):
    src, b = source
    assert _run(src) == 0
    out = capsys.readouterr().out
    assert f"{src} (text binding table) -> {src}.lwbt" in out
    assert "3000 softwires" in out and "bytes per softwire" in out
    assert_same_table(C.load(C.compiled_path(src)), BindingTable.build(b), b)


def test_cli_compiles_snabb_configuration(tmp_path, capsys):
    cfg = dataclasses.replace(example_config(), bindings=generate(500))
    conf = tmp_path / "lwaftr.conf"
    conf.write_text(dump_snabb(cfg))
    out = tmp_path / "elsewhere.lwbt"
    assert _run(conf, out) == 0
    text = capsys.readouterr().out
    assert "snabb-softwire-v3" in text and "500 softwires" in text
    assert_same_table(C.load(out), BindingTable.build(cfg.bindings), cfg.bindings)
    assert C.read_header(out).source["name"] == "lwaftr.conf"


def test_cli_reports_configuration_errors(tmp_path, capsys):
    conf = tmp_path / "t.bt"
    conf.write_text(f"{GOOD}\n{GOOD}\n")
    assert _run(conf, quiet=True) == 2
    err = capsys.readouterr().err
    assert f"compile-configuration: {conf}:2: IPV4 PSID: duplicate softwire" in err
    assert not C.compiled_path(conf).exists()


def test_cli_parser():
    p = argparse.ArgumentParser()
    cc.add_parser(p.add_subparsers())
    args = p.parse_args(["compile-configuration", "a.conf"])
    assert (args.conf, args.out, args.progress, args.func) == ("a.conf", None, None, cc.run)
    args = p.parse_args(["compile-configuration", "--no-progress", "a.conf", "b.lwbt"])
    assert (args.out, args.progress) == ("b.lwbt", False)
