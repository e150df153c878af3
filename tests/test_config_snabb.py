"""The snabb-softwire-v3 loader: the reference configurations, round trips, and
one test per kind of bad input (each checks the error's line and leaf path)."""
from __future__ import annotations

import ipaddress
from pathlib import Path

import numpy as np
import pytest

from lwaftr.config.errors import ConfigError
from lwaftr.config.snabb import dump_snabb, load_snabb, loads_snabb, validate_br_addresses
from lwaftr.config.yangdata import parse

from conftest import VECTORS

CONFS = sorted(VECTORS.glob("*.conf"))
SW = "softwire-config/binding-table/softwire"


def v4(s: str) -> bytes:
    return ipaddress.IPv4Address(s).packed


def v6(s: str) -> bytes:
    return ipaddress.IPv6Address(s).packed


def mac(s: str) -> bytes:
    return bytes.fromhex(s.replace(":", ""))


# --- the reference configurations ----------------------------------------------------------------

def test_all_vectors_present():
    assert len(CONFS) == 15


@pytest.mark.parametrize("path", CONFS, ids=lambda p: p.name)
def test_vector_loads(path: Path):
    c = load_snabb(str(path))
    assert c.source == str(path)
    assert len(c.bindings) > 0 and len(c.instances) == 1
    b = c.bindings
    assert b.ipv4.dtype == np.uint32 and b.b4_ipv6.shape == (len(b), 16)
    assert (b.line > 0).all() and (np.diff(b.line) > 0).all()


@pytest.mark.parametrize("path", CONFS, ids=lambda p: p.name)
def test_vector_round_trip(path: Path, tmp_path: Path):
    c = load_snabb(str(path))
    text = dump_snabb(c)
    out = tmp_path / "dumped.conf"
    out.write_text(text)
    again = load_snabb(str(out))
    assert again == c
    assert again.bindings.br_addresses == c.bindings.br_addresses
    assert dump_snabb(again) == text


def test_icmp_on_fail():
    c = load_snabb(str(VECTORS / "icmp_on_fail.conf"))
    b = c.bindings
    assert len(b) == 12
    inst = c.instance
    assert (inst.device, inst.external_device, inst.queue_id) == ("test", None, 0)
    assert inst.external.ip == v4("10.10.10.10")
    assert inst.external.mac == mac("12:12:12:12:12:12")
    assert inst.external.next_hop.mac == mac("68:68:68:68:68:68")
    assert inst.internal.ip == v6("8:9:a:b:c:d:e:f")
    assert inst.internal.next_hop == type(inst.internal.next_hop)(mac=mac("44:44:44:44:44:44"))
    for pol in (c.external, c.internal):
        assert pol.allow_incoming_icmp is False
        assert pol.generate_icmp_errors is True
        assert pol.reassembly_max_fragments_per_packet == 40
        assert pol.reassembly_max_packets == 20000
        assert pol.error_rate_limit_packets == 600000 and pol.error_rate_limit_period == 2
        assert pol.mru == 1460 and pol.vlan_tag is None
    assert (c.external.mtu, c.internal.mtu) == (1460, 1500)          # schema defaults
    assert c.internal.hairpinning is True and c.internal.flow_label == 0
    # first softwire: ipv4 178.79.150.3; psid 4; psid-length 6; br 1e:2:2:2:2:2:2:af; line 3
    assert int(b.ipv4[0]) == int(ipaddress.IPv4Address("178.79.150.3"))
    assert (int(b.psid[0]), int(b.psid_length[0]), int(b.reserved_ports_bit_count[0])) == (4, 6, 0)
    assert bytes(b.b4_ipv6[0]) == v6("127:14:25:36:47:58:69:128")
    assert b.br_addresses == [v6("1e:2:2:2:2:2:2:af"), v6("8:9:a:b:c:d:e:f"), v6("1e:1:1:1:1:1:1:af")]
    assert b.br_index.tolist() == [0] + [1] * 10 + [2]
    assert b.line.tolist() == list(range(3, 103, 9))


def test_vlan_tags():
    c = load_snabb(str(VECTORS / "vlan.conf"))
    assert c.instance.external.vlan_tag == 1092
    assert c.instance.internal.vlan_tag == 1638


def test_filters():
    c = load_snabb(str(VECTORS / "no_icmp_with_filters_accept.conf"))
    assert (c.external.ingress_filter, c.external.egress_filter) == ("ip", "ip")
    assert (c.internal.ingress_filter, c.internal.egress_filter) == ("ip6", "ip6")
    c = load_snabb(str(VECTORS / "no_icmp_with_filters_drop.conf"))
    assert c.external.ingress_filter == "len < 0" and c.internal.egress_filter == "len < 0"


def test_next_hop_ip():
    c = load_snabb(str(VECTORS / "tunnel_icmp_withoutmac.conf"))
    assert c.instance.internal.next_hop.ip == v6("8:9:a:b:4:3:2:1")
    assert c.instance.internal.next_hop.mac is None
    c = load_snabb(str(VECTORS / "tunnel_icmp_without_mac4.conf"))
    assert c.instance.external.next_hop.ip == v4("4.5.6.7")
    assert c.instance.external.next_hop.mac is None


def test_mtus_and_hairpinning():
    c = load_snabb(str(VECTORS / "big_mtu_no_icmp.conf"))
    assert (c.external.mtu, c.internal.mtu) == (1960, 2000)
    assert c.external.generate_icmp_errors is False
    assert load_snabb(str(VECTORS / "no_hairpin.conf")).internal.hairpinning is False
    assert load_snabb(str(VECTORS / "small_ipv6_mtu_no_icmp.conf")).internal.mtu == 1280


# --- a small configuration to break ------------------------------------------------------------------

BASE = """\
softwire-config {
  binding-table {
    softwire {
      ipv4 192.0.2.1;
      psid 1;
      b4-ipv6 2001:db8::a;
      br-address 2001:db8::1;
      port-set {
        psid-length 4;
      }
    }
@SW
  }
  external-interface {
@EXT
  }
  internal-interface {
@INT
  }
  instance {
    device test;
@INST
    queue {
      id 0;
      external-interface {
        ip 10.0.0.1;
        mac 02:00:00:00:00:01;
        next-hop {
          mac 02:00:00:00:00:11;
        }
      }
      internal-interface {
        ip 2001:db8::1;
        mac 02:00:00:00:00:02;
        next-hop {
@NH6
        }
      }
    }
  }
}
"""


def conf(sw: str = "", ext: str = "", int_: str = "", inst: str = "",
         nh6: str = "mac 02:00:00:00:00:22;") -> str:
    return (BASE.replace("@SW", sw).replace("@EXT", ext).replace("@INT", int_)
            .replace("@INST", inst).replace("@NH6", nh6))


def softwire(ipv4: str = "192.0.2.2", psid: int = 0, plen: int = 0, b4: str = "2001:db8::b",
             br: str = "2001:db8::1", extra: str = "", port_extra: str = "") -> str:
    return (f"    softwire {{ // <-\n      ipv4 {ipv4};\n      psid {psid};\n      b4-ipv6 {b4};\n"
            f"      br-address {br};\n{extra}      port-set {{\n        psid-length {plen};\n"
            f"{port_extra}      }}\n    }}\n")


def marked(text: str, marker: str = "// <-") -> int:
    """Line number of the (first) line holding ``marker``."""
    return next(i for i, ln in enumerate(text.splitlines(), 1) if marker in ln)


def error_of(tmp_path: Path, text: str) -> ConfigError:
    f = tmp_path / "bad.conf"
    f.write_text(text)
    with pytest.raises(ConfigError) as ei:
        load_snabb(str(f))
    e = ei.value
    assert e.file == str(f)
    return e


def check(tmp_path: Path, text: str, path: str, line: int | None = None, words: str = "") -> ConfigError:
    e = error_of(tmp_path, text)
    assert e.path == path, str(e)
    assert e.line == (marked(text) if line is None else line), str(e)
    assert words.lower() in e.message.lower(), str(e)
    assert str(e) == f"{e.file}:{e.line}: {e.path}: {e.message}"
    return e


def test_base_loads():
    c = loads_snabb(conf())
    assert len(c.bindings) == 1 and c.instance.internal.next_hop.mac == mac("02:00:00:00:00:22")
    assert loads_snabb(dump_snabb(c)) == c


# unknown names, shapes, duplicates, missing

def test_unknown_leaf(tmp_path):
    check(tmp_path, conf(ext="    mtuu 1500; // <-"), "softwire-config/external-interface/mtuu",
          words="unknown leaf 'mtuu'")


def test_unknown_container(tmp_path):
    check(tmp_path, conf(int_="    foo { bar 1; } // <-"), "softwire-config/internal-interface/foo",
          words="unknown container 'foo'")


def test_unknown_leaf_in_softwire(tmp_path):
    text = conf(sw=softwire(extra="      colour blue;\n"))
    check(tmp_path, text, f"{SW}/colour", line=marked(text, "colour"), words="unknown leaf 'colour'")


def test_unknown_top_level(tmp_path):
    text = conf() + "softwire-state { } // <-\n"
    check(tmp_path, text, "softwire-state", words="unknown container")


def test_vlan_tag_not_in_external_policy(tmp_path):
    # snabb-softwire-v3 has vlan-tag in internal-interface only (per instance: both sides)
    check(tmp_path, conf(ext="    vlan-tag 5; // <-"), "softwire-config/external-interface/vlan-tag",
          words="unknown leaf")
    assert loads_snabb(conf(int_="    vlan-tag 5;")).internal.vlan_tag == 5


def test_leaf_as_container(tmp_path):
    check(tmp_path, conf(ext="    mtu { x 1; } // <-"), "softwire-config/external-interface/mtu",
          words="is a leaf")


def test_container_as_leaf(tmp_path):
    check(tmp_path, conf(ext="    reassembly 5; // <-"), "softwire-config/external-interface/reassembly",
          words="is a container")


def test_duplicate_leaf(tmp_path):
    check(tmp_path, conf(ext="    mtu 1500;\n    mtu 1400; // <-"), "softwire-config/external-interface/mtu",
          words="duplicate leaf")


def test_duplicate_leaf_in_softwire(tmp_path):
    text = conf(sw=softwire(extra="      psid 3; // dup\n"))
    check(tmp_path, text, f"{SW}/psid", line=marked(text, "// dup"), words="duplicate leaf")


def test_duplicate_container(tmp_path):
    text = conf(ext="    reassembly { max-packets 5; }\n    reassembly { max-packets 6; } // <-")
    check(tmp_path, text, "softwire-config/external-interface/reassembly", words="duplicate container")


def test_missing_mandatory_softwire_leaf(tmp_path):
    text = conf(sw="    softwire { // <-\n      ipv4 192.0.2.2;\n      psid 0;\n      br-address 2001:db8::1;\n"
                   "      port-set { psid-length 0; }\n    }\n")
    check(tmp_path, text, f"{SW}/b4-ipv6", words="missing mandatory leaf 'b4-ipv6'")


def test_missing_psid_length(tmp_path):
    text = conf(sw="    softwire {\n      ipv4 192.0.2.2;\n      psid 0;\n      b4-ipv6 ::2;\n"
                   "      br-address 2001:db8::1;\n      port-set { // <-\n      }\n    }\n")
    check(tmp_path, text, f"{SW}/port-set/psid-length", words="missing mandatory")


def test_missing_port_set(tmp_path):
    text = conf(sw="    softwire { // <-\n      ipv4 192.0.2.2;\n      psid 0;\n      b4-ipv6 ::2;\n"
                   "      br-address 2001:db8::1;\n    }\n")
    check(tmp_path, text, f"{SW}/port-set/psid-length", words="missing mandatory")


def test_missing_instance_mac(tmp_path):
    text = conf().replace("        mac 02:00:00:00:00:01;\n", "")
    line = marked(text, "ip 10.0.0.1") - 1       # the external-interface { line
    check(tmp_path, text, "softwire-config/instance/queue/external-interface/mac", line=line,
          words="missing mandatory leaf 'mac'")


def test_missing_instance(tmp_path):
    text = "softwire-config {\n  binding-table { }\n}\n"
    check(tmp_path, text, "softwire-config/instance", line=1, words="at least one instance")


def test_missing_softwire_config(tmp_path):
    e = error_of(tmp_path, "// nothing here\n")
    assert (e.path, e.line) == ("softwire-config", None)
    assert str(e) == f"{e.file}: softwire-config: {e.message}"


def test_instance_without_queue(tmp_path):
    text = conf().replace("  instance {\n    device test;", "  instance {\n    device other;\n  }\n"
                          "  instance { // <-\n    device test;")
    text = text.replace("device other;", "device other;\n    queue { id 1; external-interface { ip 1.1.1.1; "
                        "mac 02:00:00:00:00:01; next-hop { ip 1.1.1.2; } } internal-interface { ip ::1; "
                        "mac 02:00:00:00:00:02; next-hop { ip ::2; } } }")
    assert len(loads_snabb(text).instances) == 2
    text = conf().replace("  instance {", "  instance { // <-\n    device lonely;\n  }\n  instance {")
    check(tmp_path, text, "softwire-config/instance/queue", words="has no queue")


def test_duplicate_instance_device(tmp_path):
    text = conf().replace("  instance {", "  instance {\n    device test;\n    queue { id 1; "
                          "external-interface { ip 1.1.1.1; mac 02:00:00:00:00:01; next-hop { ip 1.1.1.2; } } "
                          "internal-interface { ip ::1; mac 02:00:00:00:00:02; next-hop { ip ::2; } } }\n  }\n"
                          "  instance {", 1)
    lines = text.splitlines()
    second = [i for i, ln in enumerate(lines, 1) if ln.strip() == "device test;"][1]
    check(tmp_path, text, "softwire-config/instance/device", line=second, words="duplicate instance")


def test_duplicate_queue_id(tmp_path):
    q = ("    queue { id 0; external-interface { ip 1.1.1.1; mac 02:00:00:00:00:01; next-hop { ip 1.1.1.2; } }"
         " internal-interface { ip ::1; mac 02:00:00:00:00:02; next-hop { ip ::2; } } }")
    text = conf(inst=q).replace("      id 0;\n", "      id 0; // <-\n")
    check(tmp_path, text, "softwire-config/instance/queue/id", words="duplicate queue id 0")
    two = loads_snabb(text.replace("      id 0;", "      id 1;"))
    assert [(i.device, i.queue_id) for i in two.instances] == [("test", 0), ("test", 1)]
    assert two.instances[0].external.next_hop.ip == v4("1.1.1.2")


def test_next_hop_both(tmp_path):
    text = conf(nh6="mac 02:00:00:00:00:22;\n          ip 2001:db8::99; // <-")
    check(tmp_path, text, "softwire-config/instance/queue/internal-interface/next-hop/ip",
          words="alternatives")


def test_next_hop_neither(tmp_path):
    text = conf(nh6="")
    line = [i for i, ln in enumerate(text.splitlines(), 1) if "next-hop {" in ln][1]
    check(tmp_path, text, "softwire-config/instance/queue/internal-interface/next-hop", line=line,
          words="one of 'ip' or 'mac'")


# wrong types and ranges

@pytest.mark.parametrize("ext, leaf, words", [
    ("mtu abc;", "mtu", "expected uint16"),
    ("mtu 65536;", "mtu", "out of range 0..65535"),
    ("mtu -1;", "mtu", "expected uint16"),
    ("allow-incoming-icmp yes;", "allow-incoming-icmp", "boolean"),
    ("error-rate-limiting { packets 4294967296; }", "error-rate-limiting/packets", "out of range"),
    ("error-rate-limiting { period 0; }", "error-rate-limiting/period", "out of range 1..4294967295"),
    ("reassembly { max-fragments-per-packet 0; }", "reassembly/max-fragments-per-packet", "out of range"),
    ("mru 1_000;", "mru", "expected uint16"),
])
def test_bad_external_value(tmp_path, ext, leaf, words):
    check(tmp_path, conf(ext=f"    {ext} // <-"), f"softwire-config/external-interface/{leaf}", words=words)


@pytest.mark.parametrize("int_, leaf, words", [
    ("hairpinning 1;", "hairpinning", "boolean"),
    ("vlan-tag 4096;", "vlan-tag", "out of range 0..4095"),
    ("flow-label 1048576;", "flow-label", "out of range"),
])
def test_bad_internal_value(tmp_path, int_, leaf, words):
    check(tmp_path, conf(int_=f"    {int_} // <-"), f"softwire-config/internal-interface/{leaf}", words=words)


def test_bad_queue_id(tmp_path):
    text = conf().replace("      id 0;", "      id 256; // <-")
    check(tmp_path, text, "softwire-config/instance/queue/id", words="out of range 0..255")


def test_bad_instance_vlan(tmp_path):
    text = conf().replace("        ip 10.0.0.1;", "        ip 10.0.0.1;\n        vlan-tag 5000; // <-")
    check(tmp_path, text, "softwire-config/instance/queue/external-interface/vlan-tag", words="out of range")


def test_bad_instance_ipv4(tmp_path):
    text = conf().replace("ip 10.0.0.1;", "ip 10.0.0.256; // <-")
    check(tmp_path, text, "softwire-config/instance/queue/external-interface/ip", words="bad IPv4 address")


def test_bad_instance_ipv6_is_ipv4(tmp_path):
    text = conf().replace("ip 2001:db8::1;", "ip 10.0.0.2; // <-")
    check(tmp_path, text, "softwire-config/instance/queue/internal-interface/ip", words="bad IPv6 address")


def test_bad_mac(tmp_path):
    text = conf().replace("mac 02:00:00:00:00:02;", "mac 02:00:00:00:00; // <-")
    check(tmp_path, text, "softwire-config/instance/queue/internal-interface/mac", words="bad MAC address")


def test_bad_softwire_ipv4(tmp_path):
    text = conf(sw=softwire()).replace("ipv4 192.0.2.2;", "ipv4 192.0.2.256; // bad")
    check(tmp_path, text, f"{SW}/ipv4", line=marked(text, "// bad"), words="bad IPv4 address")


def test_bad_softwire_b4(tmp_path):
    text = conf(sw=softwire(b4="2001:db8::g"))
    check(tmp_path, text, f"{SW}/b4-ipv6", line=marked(text, "2001:db8::g"), words="bad IPv6 address")


def test_bad_softwire_br_address(tmp_path):
    text = conf(sw=softwire(br="2001:db8:::1"))
    check(tmp_path, text, f"{SW}/br-address", line=marked(text, "2001:db8:::1"), words="bad IPv6")


def test_bad_softwire_psid_type(tmp_path):
    text = conf(sw=softwire().replace("psid 0;", "psid 65536;"))
    check(tmp_path, text, f"{SW}/psid", line=marked(text, "65536"), words="out of range 0..65535")


def test_bad_psid_length_range(tmp_path):
    text = conf(sw=softwire(plen=17))
    check(tmp_path, text, f"{SW}/port-set/psid-length", line=marked(text, "psid-length 17"),
          words="out of range 0..16")


# binding-table consistency (vectorised checks; the line is the softwire's)

def test_psid_too_big_for_its_length_is_left_out_with_one_warning(caplog):
    """Snabb's schema takes it, and Snabb's generate-configuration writes psids 1..2^k
    for psid-length k: such a file loads, its unreachable softwires left out, said once."""
    sws = "".join(softwire(ipv4=f"198.51.100.{1 + p // 64}", psid=p % 64 + 1, plen=6, b4=f"2001:db8::{p + 1:x}")
                  for p in range(128))
    text = conf(sw=sws)
    with caplog.at_level("WARNING", logger="lwaftr.config.snabb"):
        c = loads_snabb(text, source="gen.conf")
    first = [i for i, ln in enumerate(text.splitlines(), 1) if "psid 64;" in ln][0] - 2   # its softwire {
    assert len(c.bindings) == 1 + 126 and set(c.bindings.psid.tolist()) == set(range(1, 64))
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == [f"gen.conf:{first}: 2 softwire(s) with a psid that does not fit their psid-length "
                        "(here psid 64, psid-length 6) can carry no traffic: left out"]


def test_port_set_bits_exceed_16(tmp_path):
    text = conf(sw=softwire(psid=1, plen=10, port_extra="        reserved-ports-bit-count 7;\n"))
    check(tmp_path, text, f"{SW}/port-set/reserved-ports-bit-count", words="exceeds 16")


def test_overlapping_port_sets(tmp_path):
    e = check(tmp_path, conf(sw=softwire(ipv4="192.0.2.1", psid=2, plen=6)), f"{SW}/port-set",
              words="overlapping port sets")
    assert "line 3" in e.message        # the first softwire for 192.0.2.1


def test_overlapping_reserved_bits(tmp_path):
    text = conf(sw=softwire(ipv4="192.0.2.1", psid=2, plen=4,
                            port_extra="        reserved-ports-bit-count 2;\n"))
    check(tmp_path, text, f"{SW}/port-set", words="overlapping port sets")


def test_duplicate_softwire(tmp_path):
    e = check(tmp_path, conf(sw=softwire(ipv4="192.0.2.1", psid=1, plen=4, b4="2001:db8::c")), SW,
              words="duplicate softwire 192.0.2.1 psid 1")
    assert "line 3" in e.message


def test_first_error_in_file_order(tmp_path):
    sws = softwire(ipv4="192.0.2.9", psid=1, plen=4) + softwire(ipv4="192.0.2.9", psid=1, plen=4)
    text = conf(sw=sws.replace("// <-", "", 1))
    check(tmp_path, text, SW, words="duplicate softwire 192.0.2.9")


def test_br_address_not_checked_against_instance():
    # snabb-softwire-v3 has no list of BR addresses: any br-address defines one
    c = loads_snabb(conf(sw=softwire(br="2001:db8::77")))
    assert c.bindings.br_addresses == [v6("2001:db8::1"), v6("2001:db8::77")]
    assert c.bindings.br_index.tolist() == [0, 1]


def test_validate_br_addresses():
    text = conf(sw=softwire(br="2001:db8::77"))
    c = loads_snabb(text, "x.conf")
    validate_br_addresses(c, {v6("2001:db8::1"), v6("2001:db8::77")})
    with pytest.raises(ConfigError) as ei:
        validate_br_addresses(c, {c.instance.internal.ip})
    e = ei.value
    assert (e.file, e.line, e.path) == ("x.conf", marked(text), f"{SW}/br-address")
    assert "2001:db8::77" in e.message


# syntax

@pytest.mark.parametrize("snippet, leaf, words", [
    ("    mtu 1500 // <-\n    mru 1400;", "/mtu", "expected ';' or '{'"),   # reported at 'mru', next line
    ("    mtu 15 00; // <-", "/mtu", "expected ';' or '{'"),
    ("    mtu \"1500\" \"x\"; // <-", "/mtu", "expected ';' or '{'"),
    ("    ingress-filter 'ip; // <-", "/ingress-filter", "unterminated quoted string"),
    ("    ; // <-", "", "keyword expected"),
    ("    mtu\"1500\"; // <-", "/mtu", "expected ';' or '{'"),
    ("    3mtu 1500; // <-", "", "unexpected character"),
])
def test_syntax_errors(tmp_path, snippet, leaf, words):
    text = conf(ext=snippet)
    e = error_of(tmp_path, text)
    line = marked(text) + (1 if "mru" in snippet else 0)
    assert (e.line, e.path) == (line, "softwire-config/external-interface" + leaf), str(e)
    assert words in e.message, str(e)


def test_stray_close_brace(tmp_path):
    text = conf(ext="    }")      # closes external-interface early: the file's last '}' is one too many
    e = error_of(tmp_path, text)
    assert e.line == len(text.splitlines()) and "unexpected '}'" in e.message


def test_unclosed_block(tmp_path):
    text = "softwire-config {\n  instance { // <-\n    device x;\n"
    e = error_of(tmp_path, text)
    assert e.line == 2 and "never closed" in e.message


def test_unterminated_comment(tmp_path):
    text = conf(ext="    /* no end // <-")
    e = error_of(tmp_path, text)
    assert e.line == marked(text) and "unterminated comment" in e.message


def test_comments_and_quoting():
    text = conf(ext='    /* block\n       comment */ ingress-filter "tcp port 80 and \\"x\\"" ; // c\n'
                    "    egress-filter 'not ' + \"ip6\";\n    mtu \"1400\";",
                int_="    ingress-filter \"a\\\\b\\tc\";")
    c = loads_snabb(text)
    assert c.external.ingress_filter == 'tcp port 80 and "x"'
    assert c.external.egress_filter == "not ip6"
    assert c.external.mtu == 1400
    assert c.internal.ingress_filter == "a\\b\tc"
    assert loads_snabb(dump_snabb(c)) == c


def test_multiline_quoted_string_indentation():
    doc = parse('a {\n  b "one\n     two\n        three";\n}\n')
    assert doc.children[0].children[0].value == "one\ntwo\n   three"


def test_name_and_round_trip_of_odd_strings():
    c = loads_snabb(conf().replace("softwire-config {", 'softwire-config {\n  name "my \\"lw\\" aftr";', 1))
    assert c.name == 'my "lw" aftr'
    again = loads_snabb(dump_snabb(c))
    assert again == c and again.name == c.name


# the bulk path: mixed canonical and free-form softwires, errors deep in a big table

def big_table(n: int, odd_every: int = 7) -> tuple[str, list[tuple[int, int, int, int, bytes]]]:
    """n softwires; every odd_every-th written unusually (quotes, reserved bits, padding,
    other leaf order, a comment inside) so it takes the generic path."""
    rows, out = [], []
    for i in range(n):
        ip = 0xC6336400 + i // 16        # 198.51.100.0 + ..., 16 softwires per address
        a = str(ipaddress.IPv4Address(ip))
        b4 = ipaddress.IPv6Address((0x20010DB8 << 96) + i)
        rsv = 0
        if i % odd_every == 0:
            # every softwire of one address must agree on the port-set parameters: use rsv=0
            out.append(f'    softwire {{\n      psid "{i % 16}";\n      padding 0;\n      ipv4 {a}; /* x */\n'
                       f"      br-address 2001:db8::1;\n      b4-ipv6 '{b4}';\n"
                       f"      port-set {{ reserved-ports-bit-count {rsv}; psid-length 4; }}\n    }}")
        else:
            out.append(f"    softwire {{\n      ipv4 {a};\n      psid {i % 16};\n      b4-ipv6 {b4};\n"
                       f"      br-address 2001:db8::{1 + i % 3};\n      port-set {{\n"
                       f"        psid-length 4;\n      }}\n    }}")
        rows.append((ip, i % 16, 4, rsv, b4.packed))
    return conf(sw="\n".join(out) + "\n"), rows


def test_big_table_mixed_forms():
    text, rows = big_table(500)
    b = loads_snabb(text).bindings
    assert len(b) == 501                 # the base file's own softwire comes first
    assert b.psid.tolist()[1:] == [r[1] for r in rows]
    assert b.ipv4.tolist()[1:] == [r[0] for r in rows]
    assert b.psid_length.tolist()[1:] == [4] * 500
    assert [bytes(x) for x in b.b4_ipv6[1:]] == [r[4] for r in rows]
    lines = text.splitlines()
    starts = [i for i, ln in enumerate(lines, 1) if ln.strip() == "softwire {"]
    assert b.line.tolist() == starts
    assert b.br_rows()[0].tobytes() == v6("2001:db8::1")


def test_big_table_error_line(tmp_path):
    text, _ = big_table(2000)
    lines = text.splitlines()
    k = [i for i, ln in enumerate(lines) if "ipv4 198.51.100.80;" in ln][5]   # deep in the table
    lines[k] = lines[k].replace("198.51.100.80", "198.51.100.800")
    text = "\n".join(lines) + "\n"
    check(tmp_path, text, f"{SW}/ipv4", line=k + 1, words="bad IPv4")


def test_big_table_overlap_line(tmp_path):
    text, _ = big_table(2000)
    lines = text.splitlines()
    k = [i for i, ln in enumerate(lines) if "ipv4 198.51.100.90;" in ln][3]
    assert "psid-length 4;" in lines[k + 5]
    lines[k + 5] = lines[k + 5].replace("psid-length 4;", "psid-length 5;")
    text = "\n".join(lines) + "\n"
    check(tmp_path, text, f"{SW}/port-set", line=k, words="overlapping port sets")


def test_loader_is_all_or_nothing(tmp_path):
    # a table whose only problem is its last softwire: nothing is returned
    text, _ = big_table(300)
    text = text.replace("  }\n  external-interface", softwire(ipv4="198.51.100.0", psid=1, plen=10, port_extra=
                        "        reserved-ports-bit-count 7;\n") + "  }\n  external-interface", 1)
    check(tmp_path, text, f"{SW}/port-set/reserved-ports-bit-count", words="exceeds 16")


def test_canonical_and_free_form_softwires_agree():
    sws = "".join(softwire(ipv4=f"192.0.2.{10 + i}", psid=i % 4, plen=2,
                           extra="      padding 7;\n" if i % 2 else "",
                           port_extra="        reserved-ports-bit-count 3;\n" if i % 3 else "")
                  for i in range(12)).replace(" // <-", "")
    canonical = loads_snabb(conf(sw=sws))
    free = loads_snabb(conf(sw=sws.replace("      psid ", "      /* c */ psid ")))
    assert canonical.bindings == free.bindings
    assert canonical.bindings.line.tolist() == free.bindings.line.tolist()
    assert canonical.bindings.reserved_ports_bit_count.tolist()[1:] == [0 if i % 3 == 0 else 3 for i in range(12)]


def test_bad_padding(tmp_path):
    text = conf(sw=softwire(extra="      padding 65536;\n"))
    check(tmp_path, text, f"{SW}/padding", line=marked(text, "padding"), words="out of range")


def test_round_trip_built_config():
    from lwaftr.examples import example_config
    c = example_config()
    assert loads_snabb(dump_snabb(c)) == c


def test_dump_refuses_what_the_format_cannot_say():
    import dataclasses
    c = loads_snabb(conf())
    with pytest.raises(ValueError):
        dump_snabb(dataclasses.replace(c, external=dataclasses.replace(c.external, vlan_tag=3)))
