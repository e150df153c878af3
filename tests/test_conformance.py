"""Every case of the Snabb lwAFTR end-to-end suite, through ``lwaftr check``.

Outputs must equal the expected pcaps byte for byte, in order, and the
counters must equal the case's ``counters`` (others 0), in both modes.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from lwaftr import counters as C
from lwaftr.cli.main import main as lwaftr_main
from lwaftr.io.pcap import read_frames

from conftest import VECTORS, rfc4861_expected_ns, yang_leaves

MANIFEST = json.loads((VECTORS / "manifest.json").read_text())
WRONG_FAMILY = {"sending non-IPv4 traffic to the IPv4 interface", "sending non-IPv6 traffic to the IPv6 interface"}
# Snabb's file solicits the next hop with a broadcast to its unicast address;
# RFC 4861 7.2.2 (and current Snabb) solicit its solicited-node multicast address.
NDP_DEVIATION = "NDP: With receiving NA, next_hop6_mac not initially set"


def _cases(on_a_stick: bool):
    for case in MANIFEST:
        if on_a_stick and case["name"] in WRONG_FAMILY:
            continue
        yield pytest.param(case, id=case["name"])


def _expected(case: dict, key: str) -> list[bytes]:
    frames = read_frames(VECTORS / case[key]) if case[key] else []
    if case["name"] == NDP_DEVIATION and key == "out_v6":
        frames = [rfc4861_expected_ns(f) for f in frames]
    return frames


def _run(case: dict, tmp_path: Path, on_a_stick: bool) -> None:
    expected_counters = tmp_path / "counters.json"
    expected_counters.write_text(json.dumps(case["counters"]))
    out4, out6 = tmp_path / "out4.pcap", tmp_path / "out6.pcap"
    args = ["check"] + (["--on-a-stick"] if on_a_stick else []) + [
        "--counters", str(expected_counters), str(VECTORS / case["conf"]),
        str(VECTORS / (case["in_v4"] or "empty.pcap")), str(VECTORS / (case["in_v6"] or "empty.pcap")),
        str(out4), str(out6)]
    rc = lwaftr_main(args)
    got4, got6 = read_frames(out4), read_frames(out6)
    assert got4 == _expected(case, "out_v4"), "IPv4 interface output differs"
    assert got6 == _expected(case, "out_v6"), "IPv6 interface output differs"
    assert rc == 0, "counters differ (see stderr)"


@pytest.mark.parametrize("case", list(_cases(False)))
def test_two_interfaces(case, tmp_path):
    _run(case, tmp_path, on_a_stick=False)


@pytest.mark.parametrize("case", list(_cases(True)))
def test_on_a_stick(case, tmp_path):
    _run(case, tmp_path, on_a_stick=True)


def test_counter_table_matches_yang_softwire_state():
    """Our counter names are the snabb-softwire-v3 softwire-state leaves (plus our extensions)."""
    leaves = yang_leaves((VECTORS / "snabb-softwire-v3.yang").read_text(), "container softwire-state")
    leaves = {n for n in leaves if n != "discontinuity-time" and not n.startswith("memuse-")}
    ours = set(C.NAMES) - C.EXTENSIONS
    assert leaves <= ours, sorted(leaves - ours)
    assert ours <= leaves, sorted(ours - leaves)


def test_vectors_are_all_here():
    """The repository carries the whole suite: a missing file or case fails
    here instead of shrinking a parametrised test (or turning it into a skip)."""
    assert len(MANIFEST) == 84
    assert len(list(_cases(False))) == 84 and len(list(_cases(True))) == 82
    confs = sorted(VECTORS.glob("*.conf"))
    assert len(confs) == 15
    assert len(list(VECTORS.glob("*.pcap"))) == 110
    named = {case[k] for case in MANIFEST for k in ("conf", "in_v4", "in_v6", "out_v4", "out_v6") if case[k]}
    missing = sorted(n for n in named if not (VECTORS / n).is_file())
    assert not missing, missing
    assert (VECTORS / "NOTICE").is_file() and (VECTORS / "snabb-softwire-v3.yang").is_file()


def _forwarding_case(case: dict) -> bool:
    """A case the kernel control plane must forward exactly as the built-in one: no
    ARP, NDP or ping to the router's own addresses, no other ethertype on a side
    (the kernel's in that mode), and next hops given as MACs."""
    from lwaftr.config.load import load_config
    if case["name"] in WRONG_FAMILY or any(w in n for n in case["counters"] for w in ("arp", "ndp", "echo")):
        return False
    inst = load_config(VECTORS / case["conf"]).instance
    return inst.external.next_hop.mac is not None and inst.internal.next_hop.mac is not None


FORWARDING = [c for c in _cases(False) if _forwarding_case(c.values[0])]


def test_enough_forwarding_cases_for_the_kernel_graph():
    assert len(FORWARDING) >= 60, len(FORWARDING)


@pytest.mark.parametrize("case", FORWARDING)
@pytest.mark.parametrize("on_a_stick", [False, True], ids=["two-interfaces", "on-a-stick"])
def test_kernel_control_plane_forwards_as_the_vectors_say(case, on_a_stick, tmp_path):
    """The production default (kernel control plane) through check: the vectors'
    forwarding cases give their outputs and counters, and nothing goes to the kernel."""
    expected_counters = tmp_path / "counters.json"
    expected_counters.write_text(json.dumps({**case["counters"], "to-kernel-ipv4-interface-packets": 0,
                                             "to-kernel-ipv6-interface-packets": 0}))
    out4, out6 = tmp_path / "out4.pcap", tmp_path / "out6.pcap"
    rc = lwaftr_main(["check", "--control-plane", "kernel"] + (["--on-a-stick"] if on_a_stick else []) + [
        "--counters", str(expected_counters), str(VECTORS / case["conf"]),
        str(VECTORS / (case["in_v4"] or "empty.pcap")), str(VECTORS / (case["in_v6"] or "empty.pcap")),
        str(out4), str(out6)])
    assert read_frames(out4) == _expected(case, "out_v4"), "IPv4 interface output differs"
    assert read_frames(out6) == _expected(case, "out_v6"), "IPv6 interface output differs"
    assert rc == 0, "counters differ (see stderr)"
