"""RFC 8676 ietf-softwire-br (+ lwaftr-softwire-ext) configurations: round trips
with snabb-softwire-v3 on every reference configuration and the embedded
example, libyang rejecting bad data with the path named, the fast binding-table
path agreeing with full libyang validation, the port-set mapping, format
detection in load_config/load_table, and ``lwaftr config``."""
from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from lwaftr.cli.main import main as cli
from lwaftr.config import ietf
from lwaftr.config.errors import ConfigError
from lwaftr.config.load import load_config, load_table
from lwaftr.config.model import Bindings, ControlPlane, TableVersion
from lwaftr.config.snabb import dump_snabb, load_snabb, loads_snabb
from lwaftr.examples import example_config

from conftest import VECTORS

CONFS = sorted(VECTORS.glob("*.conf"))
BI = "br-instances/binding/bind-instance"
ENTRY = f"{BI}/binding-table/binding-entry"
FORMATS = (ietf.XML, ietf.JSON)


def named(c, name="lwaftr", source=None):
    return replace(c, name=c.name if c.name is not None else name, source=source)


def example_text(fmt: str) -> str:
    return ietf.dumps_ietf(example_config(), fmt)


# --- shipped modules -----------------------------------------------------------------------------

def test_modules_shipped_and_loaded():
    from lwaftr.config import yanglib
    names = {p.name for p in yanglib.YANG_DIR.glob("*.yang")}
    assert {"ietf-softwire-br@2019-11-16.yang", "ietf-softwire-common@2019-11-16.yang",
            "ietf-inet-types@2013-07-15.yang", "ietf-yang-types@2013-07-15.yang",
            "lwaftr-softwire-ext@2026-11-29.yang"} <= names
    ctx = yanglib.context()
    br = ctx.get_module("ietf-softwire-br")
    assert next(br.revisions()).date() == "2019-11-16" and br.feature_state("binding-mode")
    assert br.filepath().startswith(str(yanglib.YANG_DIR))
    assert ctx.get_module("lwaftr-softwire-ext").implemented()


# --- round trips ---------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
def test_example_round_trip(fmt):
    c = example_config()
    text = ietf.dumps_ietf(c, fmt)
    assert ietf.sniff(text) == fmt
    back = ietf.loads_ietf(text, "x")
    assert back == replace(c, source="x")
    assert ietf.dumps_ietf(back, fmt) == text
    # and through snabb-softwire-v3
    assert loads_snabb(dump_snabb(back)) == back


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("path", CONFS, ids=lambda p: p.name)
def test_reference_configurations(path: Path, fmt, tmp_path):
    """Snabb -> RFC 8676 -> Snabb on every reference configuration: inline where
    binding-entry can say it, else a clear refusal, and always through a
    binding-table file; nothing but the (then required) name is added."""
    c = load_snabb(str(path))
    b = c.bindings
    shared_b4 = len(np.unique(b.b4_ipv6, axis=0)) < len(b)
    if (b.psid_length > 15).any() or shared_b4:
        with pytest.raises(ValueError, match="binding-table file"):
            ietf.dumps_ietf(c, fmt)
    else:
        text = ietf.dumps_ietf(c, fmt)
        back = ietf.loads_ietf(text, "x")
        assert back == named(c, source="x")
        assert loads_snabb(dump_snabb(back)) == back
    out = tmp_path / f"conf.{fmt}"
    assert cli(["config", "convert", str(path), str(out), "--binding-table-file",
                str(tmp_path / "table.txt")]) == 0
    back = load_config(out)
    assert back == named(c)
    assert back.binding_table_file == str(tmp_path / "table.txt")
    again = tmp_path / "again.conf"
    assert cli(["config", "convert", str(out), str(again)]) == 0
    assert load_snabb(str(again)) == named(c)


def test_every_model_setting_expressible():
    """Non-default values of every Config field survive RFC 8676 and back."""
    c = example_config()
    ext = replace(c.external, mtu=1400, mru=1300, ingress_filter="ip", egress_filter="not tcp port 80",
                  allow_incoming_icmp=False, generate_icmp_errors=False, vlan_tag=7,
                  error_rate_limit_packets=11, error_rate_limit_period=3,
                  reassembly_max_fragments_per_packet=5, reassembly_max_packets=6)
    int_ = replace(c.internal, mtu=1280, mru=1500, ingress_filter="ip6", egress_filter="ip6 and udp",
                   allow_incoming_icmp=False, generate_icmp_errors=False, vlan_tag=8,
                   error_rate_limit_packets=13, error_rate_limit_period=5,
                   reassembly_max_fragments_per_packet=9, reassembly_max_packets=10,
                   flow_label=0xABCDE, hairpinning=False)
    inst = c.instances[0]
    second = replace(inst, queue_id=1, external=replace(inst.external, vlan_tag=100,
                     next_hop=type(inst.external.next_hop)(ip=ipaddress.IPv4Address("198.51.100.254").packed)),
                     internal=replace(inst.internal, vlan_tag=200,
                     next_hop=type(inst.internal.next_hop)(ip=ipaddress.IPv6Address("2001:db8::fe").packed)))
    other = replace(inst, device="eth2", external_device="eth3")
    b = replace(c.bindings, version=TableVersion(42, "2026-11-29T06:00:00+01:00"))
    b.reserved_ports_bit_count = np.array([8, 8, 12], np.uint8)      # 8: same in both; 12 with psid-len 0
    b.psid_length = np.array([4, 4, 0], np.uint8)
    cp = ControlPlane(mode="built-in", answer_arp_for_softwires=True, external_prefix_length=24,
                      internal_prefix_length=64, next_hop_refresh_interval=0.25)
    full = replace(c, external=ext, internal=int_, instances=[inst, second, other], bindings=b,
                   control_plane=cp, name="full")
    for fmt in FORMATS:
        text = ietf.dumps_ietf(full, fmt)
        assert ietf.loads_ietf(text, "x") == replace(full, source="x")
        assert ietf.loads_ietf(text, "x", fast=False) == replace(full, source="x")
    snabb = replace(full, external=replace(ext, vlan_tag=None))     # (no external vlan-tag there)
    assert loads_snabb(dump_snabb(snabb)) == snabb
    with pytest.raises(ValueError, match="vlan-tag"):
        dump_snabb(full)


def test_table_version_date_canonical():
    """libyang writes dates in their canonical form: 'Z' becomes '+00:00'."""
    c = example_config()
    c = replace(c, bindings=replace(c.bindings, version=TableVersion(None, "2026-11-29T06:00:00Z")))
    assert ietf.loads_ietf(ietf.dumps_ietf(c)).bindings.version == TableVersion(None, "2026-11-29T06:00:00+00:00")


def test_icmpv6_rate_mapping():
    c = example_config()
    per_second = replace(c, internal=replace(c.internal, error_rate_limit_packets=50, error_rate_limit_period=1))
    text = ietf.dumps_ietf(per_second, ietf.JSON)
    data = json.loads(text)
    bi = data["ietf-softwire-br:br-instances"]["binding"]["bind-instance"][0]
    assert bi["icmp-policy"]["icmpv6-errors"]["icmpv6-rate"] == 50
    assert "error-rate-limiting" not in bi["lwaftr-softwire-ext:internal-interface"]
    assert ietf.loads_ietf(text) == replace(per_second, source="<string>")
    odd = replace(c, internal=replace(c.internal, error_rate_limit_packets=7, error_rate_limit_period=2))
    bi = json.loads(ietf.dumps_ietf(odd, ietf.JSON))["ietf-softwire-br:br-instances"]["binding"]["bind-instance"][0]
    assert "icmpv6-rate" not in bi["icmp-policy"]["icmpv6-errors"]
    # a rate that disagrees with the explicit limiter is refused
    bi["icmp-policy"]["icmpv6-errors"]["icmpv6-rate"] = 9
    with pytest.raises(ConfigError) as e:
        ietf.loads_ietf(json.dumps({"ietf-softwire-br:br-instances": {"binding": {"bind-instance": [bi]}}}))
    assert e.value.path == f"{BI}/icmp-policy/icmpv6-errors/icmpv6-rate"


def test_unmapped_model_fields_refused(monkeypatch):
    """A Config field the augmentation does not cover yet is refused unless default."""
    import dataclasses as dc
    from lwaftr.config import model
    fields = dc.fields(model.Config)
    extra = dc.field(default=0)
    extra.name, extra._field_type = "future_setting", dc._FIELD
    monkeypatch.setattr(model.Config, dc._FIELDS, {**{f.name: f for f in fields}, "future_setting": extra})
    c = example_config()
    c.future_setting = 0
    ietf.dumps_ietf(c)
    c.future_setting = 1
    with pytest.raises(ValueError, match="future_setting"):
        ietf.dumps_ietf(c)


def test_unnamed_configuration_gets_default_name():
    c = replace(example_config(), name=None)
    assert ietf.loads_ietf(ietf.dumps_ietf(c)).name == ietf.DEFAULT_NAME


# --- the port-set mapping ------------------------------------------------------------------------

def _ports(k: int, shift: int, reserved_below: int, psid: int) -> set[int]:
    return {p for p in range(65536) if p >= reserved_below and ((p >> shift) & ((1 << k) - 1)) == psid}


@pytest.mark.parametrize("k,a", [(0, 0), (4, 0), (6, 8), (0, 6), (0, 12), (2, 8), (0, 8)])
def test_port_set_mapping_is_exact(k, a):
    """Where a mapping is given, both meanings give the same ports (RFC 7597 5.1
    with offset a; Snabb: lowest 2^r ports reserved)."""
    r = int(ietf.reserved_of_offset(np.array([k]), np.array([a]))[0])
    assert r >= 0 and int(ietf.offset_of_reserved(np.array([k]), np.array([r]))[0]) == a
    m = 16 - a - k
    rfc_excluded = 1 << (16 - a) if a else 0
    snabb_excluded = 1 << r if r else 0
    for psid in {0, (1 << k) - 1}:
        assert _ports(k, m, rfc_excluded, psid) == _ports(k, 16 - r - k, snabb_excluded, psid)


@pytest.mark.parametrize("k,a", [(4, 2), (6, 6), (4, 10), (0, 16)])
def test_port_set_mapping_refused(k, a):
    assert ietf.reserved_of_offset(np.array([k]), np.array([a]))[0] == -1
    text = example_text(ietf.XML).replace("<psid-len>0</psid-len><psid>0</psid>",
                                          f"<psid-offset>{a}</psid-offset><psid-len>{k}</psid-len><psid>0</psid>")
    with pytest.raises(ConfigError, match="psid-offset") as e:
        ietf.loads_ietf(text, "f.xml")
    assert e.value.path == f"{ENTRY}/port-set/psid-offset" and e.value.line == 12


def test_reserved_bits_without_rfc_equivalent_refused_on_dump():
    c = example_config()
    c.bindings.reserved_ports_bit_count = np.array([2, 2, 0], np.uint8)
    with pytest.raises(ValueError, match="reserved-ports-bit-count 2"):
        ietf.dumps_ietf(c)


def test_b4_from_prefix():
    """A /64-or-shorter binding-ipv6info builds the B4 address as RFC 7597 section 6 says."""
    text = example_text(ietf.XML).replace("<binding-ipv6info>2001:db8:1::a</binding-ipv6info>",
                                          "<binding-ipv6info>2001:db8:1:a:ffff::/64</binding-ipv6info>")
    c = ietf.loads_ietf(text)
    # 192.0.2.1 = c000:0201, psid 1
    assert bytes(c.bindings.b4_ipv6[0]) == ipaddress.IPv6Address("2001:db8:1:a:0:c000:201:1").packed
    bad = text.replace("/64<", "/96<")
    with pytest.raises(ConfigError, match="/64 or shorter") as e:
        ietf.loads_ietf(bad)
    assert e.value.path == f"{ENTRY}/binding-ipv6info"


# --- libyang rejects bad data, naming the path ---------------------------------------------------

def _xml_case(old: str, new: str) -> str:
    text = example_text(ietf.XML)
    assert old in text
    return text.replace(old, new, 1)


BAD = [
    ("bad address", "<ip>198.51.100.1</ip>", "<ip>198.51.100.300</ip>",
     f"{BI}/lwaftr-softwire-ext:instance/queue/external-interface/ip", "198.51.100.300"),
    ("psid out of range", "<psid>1</psid>", "<psid>65536</psid>", f"{ENTRY}/port-set/psid", "65536"),
    ("psid-len out of range", "<psid-len>4</psid-len>", "<psid-len>16</psid-len>",
     f"{ENTRY}/port-set/psid-len", "16"),
    ("missing mandatory", "<softwire-payload-mtu>1460</softwire-payload-mtu>", "",
     f"{BI}/softwire-payload-mtu", "Mandatory"),
    ("unknown leaf", "<enable-hairpinning>true</enable-hairpinning>",
     "<enable-hairpinning>true</enable-hairpinning><hairpin-mode>on</hairpin-mode>", BI, "hairpin-mode"),
    ("bad mac", "<mac>02:00:00:00:00:01</mac>", "<mac>02:00:00:00:01</mac>",
     f"{BI}/lwaftr-softwire-ext:instance/queue/external-interface/mac", "02:00:00:00:01"),
    ("bad vlan", "<flow-label>0</flow-label>", "<flow-label>0</flow-label><vlan-tag>4096</vlan-tag>",
     f"{BI}/lwaftr-softwire-ext:internal-interface/vlan-tag", "4096"),
    ("both next hops", "<mac>02:00:00:00:00:11</mac>", "<mac>02:00:00:00:00:11</mac><ip>198.51.100.9</ip>",
     f"{BI}/lwaftr-softwire-ext:instance/queue/external-interface/next-hop", "both"),
    ("bad mode", "<mode>kernel</mode>", "<mode>userspace</mode>",
     f"{BI}/lwaftr-softwire-ext:control-plane/mode", "userspace"),
]


@pytest.mark.parametrize("what,old,new,path,word", BAD, ids=[b[0] for b in BAD])
def test_libyang_rejects(what, old, new, path, word):
    text = _xml_case(old, new)
    for fast in (True, False):
        with pytest.raises(ConfigError) as e:
            ietf.loads_ietf(text, "bad.xml", fast=fast)
        assert e.value.path == path and e.value.file == "bad.xml"
        assert word in e.value.message
        if what not in ("missing mandatory", "both next hops"):
            line = next(i for i, ln in enumerate(text.splitlines(), 1) if new.split("><")[-1][:12] in ln
                        or new[:20] in ln)
            assert e.value.line == line


def test_libyang_rejects_json_with_line():
    text = example_text(ietf.JSON).replace('"mtu": 1460', '"mtu": "1460"', 1)
    with pytest.raises(ConfigError) as e:
        ietf.loads_ietf(text, "bad.json")
    assert e.value.path == f"{BI}/lwaftr-softwire-ext:external-interface/mtu"
    assert e.value.line == next(i for i, ln in enumerate(text.splitlines(), 1) if '"mtu": "1460"' in ln)


@pytest.mark.parametrize("edit,path,word", [
    (lambda bi: bi.update({"softwire-num-max": 2}), f"{BI}/softwire-num-max", "exceed"),
    (lambda bi: bi["icmp-policy"]["icmpv4-errors"].update({"icmpv4-rate": 5}),
     f"{BI}/icmp-policy/icmpv4-errors/icmpv4-rate", "incoming ICMPv4"),
    (lambda bi: bi.pop("lwaftr-softwire-ext:instance"), f"{BI}/lwaftr-softwire-ext:instance", "at least one"),
    (lambda bi: bi["binding-table"]["binding-entry"][0].pop("br-ipv6-addr"), f"{ENTRY}/br-ipv6-addr", "missing"),
    (lambda bi: bi.update({"softwire-payload-mtu": 65535}), f"{BI}/softwire-payload-mtu", "65535"),
])
def test_model_rejects(edit, path, word):
    data = json.loads(example_text(ietf.JSON))
    bi = data["ietf-softwire-br:br-instances"]["binding"]["bind-instance"][0]
    edit(bi)
    with pytest.raises(ConfigError) as e:
        ietf.loads_ietf(json.dumps(data, indent=1), "x.json")
    assert e.value.path == path and word in e.value.message


@pytest.mark.parametrize("wrapper", ["config", "data"])
def test_netconf_wrapper(wrapper):
    """What NETCONF carries: the data inside <config> (edit-config) or <data> (get-config)."""
    inner = example_text(ietf.XML)
    text = (f'<?xml version="1.0" encoding="UTF-8"?>\n<{wrapper} xmlns="urn:ietf:params:xml:ns:netconf:base:1.0">\n'
            f"{inner}</{wrapper}>\n")
    assert ietf.loads_ietf(text, "n") == replace(example_config(), source="n")
    with pytest.raises(ConfigError) as e:
        ietf.loads_ietf(text.replace("<psid>1</psid>", "<psid>16</psid>"), "n")
    assert e.value.line == inner[:inner.index("<psid>1</psid>")].count("\n") + 3


def test_two_bind_instances_refused():
    data = json.loads(example_text(ietf.JSON))
    insts = data["ietf-softwire-br:br-instances"]["binding"]["bind-instance"]
    insts.append(dict(insts[0], name="second"))
    with pytest.raises(ConfigError, match="exactly one bind-instance") as e:
        ietf.loads_ietf(json.dumps(data))
    assert e.value.path == BI


# --- the fast path agrees with full libyang validation --------------------------------------------

def _small_table(n: int = 40) -> str:
    c = example_config()
    v4 = (int(ipaddress.IPv4Address("192.0.2.0")) + np.arange(n) // 4).astype(np.uint32)
    b4 = np.array([list(ipaddress.IPv6Address(f"2001:db8:1::{i + 1:x}").packed) for i in range(n)], np.uint8)
    b = Bindings(v4, (np.arange(n) % 4).astype(np.uint16), np.full(n, 2, np.uint8), np.zeros(n, np.uint8),
                 b4, np.zeros(n, np.uint16), c.bindings.br_addresses, np.zeros(n, np.int32))
    return replace(c, bindings=b)


ENTRY_FAULTS = [
    ("ipv4", "<binding-ipv4-addr>192.0.2.3</binding-ipv4-addr>", "<binding-ipv4-addr>192.0.2.333</binding-ipv4-addr>",
     f"{ENTRY}/binding-ipv4-addr"),
    ("ipv4 zone", "<binding-ipv4-addr>192.0.2.3</binding-ipv4-addr>",
     "<binding-ipv4-addr>192.0.2.3%eth0</binding-ipv4-addr>", f"{ENTRY}/binding-ipv4-addr"),
    ("b4", "<binding-ipv6info>2001:db8:1::d</binding-ipv6info>", "<binding-ipv6info>2001:db8:1::g</binding-ipv6info>",
     f"{ENTRY}/binding-ipv6info"),
    ("br", "<br-ipv6-addr>2001:db8:ffff::1</br-ipv6-addr></binding-entry>\n",
     "<br-ipv6-addr>2001:db8:ffff::1::</br-ipv6-addr></binding-entry>\n", f"{ENTRY}/br-ipv6-addr"),
    ("psid range", "<psid-len>2</psid-len><psid>3</psid>", "<psid-len>2</psid-len><psid>70000</psid>",
     f"{ENTRY}/port-set/psid"),
    ("psid-len range", "<psid-len>2</psid-len><psid>3</psid>", "<psid-len>20</psid-len><psid>3</psid>",
     f"{ENTRY}/port-set/psid-len"),
    ("offset range", "<psid-len>2</psid-len><psid>3</psid>",
     "<psid-offset>17</psid-offset><psid-len>2</psid-len><psid>3</psid>", f"{ENTRY}/port-set/psid-offset"),
    ("psid too big for psid-len", "<psid-len>2</psid-len><psid>3</psid>", "<psid-len>2</psid-len><psid>4</psid>",
     f"{ENTRY}/port-set/psid"),
    ("duplicate key", "<binding-ipv6info>2001:db8:1::d</binding-ipv6info>",
     "<binding-ipv6info>2001:db8:1::c</binding-ipv6info>", ENTRY),
    ("duplicate softwire", "<binding-ipv4-addr>192.0.2.3</binding-ipv4-addr><port-set><psid-len>2</psid-len>"
     "<psid>1</psid>", "<binding-ipv4-addr>192.0.2.3</binding-ipv4-addr><port-set><psid-len>2</psid-len>"
     "<psid>0</psid>", ENTRY),
]


@pytest.mark.parametrize("what,old,new,path", ENTRY_FAULTS, ids=[f[0] for f in ENTRY_FAULTS])
def test_fast_path_agrees_on_errors(what, old, new, path):
    text = ietf.dumps_ietf(_small_table(), ietf.XML)
    assert old in text
    bad = text.replace(old, new, 1)
    errors = []
    for fast in (True, False):
        with pytest.raises(ConfigError) as e:
            ietf.loads_ietf(bad, "t.xml", fast=fast)
        errors.append(e.value)
    assert errors[0].path == errors[1].path == path
    line = text[:text.index(old)].count("\n") + 1
    assert errors[0].line == line      # (libyang's own line, for the slow path, may be where it noticed)


@pytest.mark.parametrize("fmt", FORMATS)
def test_fast_path_agrees_on_valid_tables(fmt):
    c = _small_table()
    text = ietf.dumps_ietf(c, fmt)
    fast, slow = ietf.loads_ietf(text, "t", fast=True), ietf.loads_ietf(text, "t", fast=False)
    assert fast == slow == replace(c, source="t")
    assert fast.bindings.line.tolist() == slow.bindings.line.tolist()
    assert (fast.bindings.line > 0).all()


@pytest.mark.parametrize("fmt", FORMATS)
def test_non_canonical_entries_take_the_slow_path(fmt):
    """Entries written another way (leaf order, prefixes, comments) load the same."""
    c = _small_table(8)
    if fmt == ietf.XML:
        text = ietf.dumps_ietf(c, fmt)
        text = text.replace("<binding-entry><binding-ipv6info>2001:db8:1::3</binding-ipv6info>"
                            "<binding-ipv4-addr>192.0.2.0</binding-ipv4-addr>",
                            "<!-- reordered --><binding-entry><binding-ipv4-addr>192.0.2.0</binding-ipv4-addr>"
                            "<binding-ipv6info>2001:db8:1::3</binding-ipv6info>")
    else:
        data = json.loads(ietf.dumps_ietf(c, fmt))
        e = data["ietf-softwire-br:br-instances"]["binding"]["bind-instance"][0]["binding-table"]["binding-entry"]
        e[2] = {"br-ipv6-addr": e[2]["br-ipv6-addr"], **{k: v for k, v in e[2].items() if k != "br-ipv6-addr"}}
        text = json.dumps(data, indent=2)
    assert ietf.loads_ietf(text, "t") == replace(c, source="t")


def test_entries_in_a_comment_are_not_taken():
    c = _small_table(4)
    text = ietf.dumps_ietf(c, ietf.XML)
    table = re.search(r"<binding-table>.*</binding-table>", text, re.S).group()
    moved = text.replace(table, "<binding-table>\n</binding-table>").replace(
        "<br-instances", f"<!-- old: {table} -->\n<br-instances", 1)
    assert len(ietf.loads_ietf(moved).bindings) == 0


# --- loading by content, binding-table files -----------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
def test_load_config_and_table_by_content(fmt, tmp_path):
    c = example_config()
    p = tmp_path / "conf.any"
    p.write_text(ietf.dumps_ietf(c, fmt))
    assert load_config(p) == named(c)
    cfg, table = load_table(p)
    assert table.count == 3 and table.lookup(int(ipaddress.IPv4Address("192.0.2.1")), 4100) is not None
    cfg2, _ = load_table(p)                     # from CONF.lwbt and its rest
    assert replace(cfg2, bindings=Bindings.empty()) == replace(c, bindings=Bindings.empty())
    s = tmp_path / "conf.snabb"
    s.write_text(dump_snabb(c))
    assert load_config(s) == c


def test_binding_table_file(tmp_path):
    from lwaftr.bindingtable.textformat import dump_text
    c = load_snabb(str(VECTORS / "icmp_on_fail.conf"))
    dump_text(c.bindings, tmp_path / "t.bt")
    conf = tmp_path / "c.xml"
    conf.write_text(ietf.dumps_ietf(c, ietf.XML, binding_table_file="t.bt"))
    loaded = load_config(conf)
    assert loaded == named(c) and loaded.binding_table_file == str(tmp_path / "t.bt")
    cfg, table = load_table(conf)
    assert table.count == len(c.bindings) and len(cfg.bindings) == 0
    assert (tmp_path / "t.bt.lwbt").exists() and not (tmp_path / "c.xml.lwbt").exists()
    # a compiled table is accepted too
    conf2 = tmp_path / "c2.json"
    conf2.write_text(ietf.dumps_ietf(c, ietf.JSON, binding_table_file="t.bt.lwbt"))
    from_compiled = load_config(conf2)
    order = np.lexsort((c.bindings.psid, c.bindings.ipv4))
    b = c.bindings
    assert from_compiled.bindings == Bindings(b.ipv4[order], b.psid[order], b.psid_length[order],
                                              b.reserved_ports_bit_count[order], b.b4_ipv6[order],
                                              b.br_index[order], b.br_addresses)
    # a broken table file is reported against that file
    (tmp_path / "t.bt").write_text("192.0.2.1 99 4 2001:db8::1 2001:db8::2\n")
    with pytest.raises(ConfigError) as e:
        load_config(conf)
    assert e.value.file == str(tmp_path / "t.bt") and e.value.line == 1
    # and entries beside a file are refused
    both = ietf.dumps_ietf(example_config(), ietf.XML).replace(
        "</binding-table>", '<binding-table-file xmlns="urn:lwaftr:softwire-ext">t.bt</binding-table-file>'
        "</binding-table>")
    for fast in (True, False):
        with pytest.raises(ConfigError, match="alternatives") as e:
            ietf.loads_ietf(both, str(tmp_path / "x.xml"), fast=fast)
        assert e.value.path == f"{BI}/binding-table/lwaftr-softwire-ext:binding-table-file"


# --- the command ---------------------------------------------------------------------------------

def test_cli_convert_and_validate(tmp_path, capsys):
    src = VECTORS / "icmp_endaddr.conf"
    xml, js, back = tmp_path / "a.xml", tmp_path / "a.json", tmp_path / "a.conf"
    assert cli(["config", "convert", str(src), str(xml)]) == 0
    assert cli(["config", "convert", str(xml), str(js)]) == 0
    assert cli(["config", "convert", str(js), str(back)]) == 0
    assert load_snabb(str(back)) == named(load_snabb(str(src)))
    assert json.loads(js.read_text())["ietf-softwire-br:br-instances"]
    assert cli(["config", "convert", str(xml), "-", "--to", "ietf-json"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(js.read_text())
    assert cli(["config", "validate", str(js)]) == 0
    assert "valid RFC 8676 JSON" in capsys.readouterr().out
    # what RFC 8676 binding entries cannot say: a clear refusal, nothing written
    out = tmp_path / "vlan.xml"
    assert cli(["config", "convert", str(VECTORS / "vlan.conf"), str(out)]) == 2
    err = capsys.readouterr().err
    assert "psid-len range 0..15" in err and not out.exists()
    # a bad file: exit 2, file, line and path named
    bad = tmp_path / "bad.xml"
    bad.write_text(xml.read_text().replace("<psid>", "<psid>x", 1))
    assert cli(["config", "validate", str(bad)]) == 2
    assert re.search(rf"{re.escape(str(bad))}:\d+: {ENTRY}/port-set/psid: ", capsys.readouterr().err)
    assert cli(["config", "convert", str(src), str(tmp_path / "a.txt")]) == 2
    assert "--to" in capsys.readouterr().err
