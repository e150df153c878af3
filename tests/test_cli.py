"""The ``lwaftr`` console script itself, as an operator runs it."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from lwaftr.io.pcap import read_frames

from conftest import VECTORS

LWAFTR = [str(Path(sys.executable).with_name("lwaftr"))]


def _check(tmp_path: Path, counters: dict, conf: Path = VECTORS / "icmp_on_fail.conf"):
    cfile = tmp_path / "c.json"
    cfile.write_text(json.dumps(counters))
    out4, out6 = tmp_path / "o4.pcap", tmp_path / "o6.pcap"
    r = subprocess.run(LWAFTR + ["check", "--counters", str(cfile), str(conf),
                                 str(VECTORS / "tcp-frominet-bound.pcap"), str(VECTORS / "empty.pcap"),
                                 str(out4), str(out6)], capture_output=True, text=True, timeout=300)
    return r, out4, out6


EXPECTED = {"in-ipv4-bytes": 66, "in-ipv4-frag-reassembly-unneeded": 1, "in-ipv4-packets": 1,
            "out-ipv6-bytes": 106, "out-ipv6-frag-not": 1, "out-ipv6-packets": 1}


def test_check_passes_and_writes_both_pcaps(tmp_path):
    r, out4, out6 = _check(tmp_path, EXPECTED)
    assert r.returncode == 0, r.stderr
    assert read_frames(out4) == []
    assert read_frames(out6) == read_frames(VECTORS / "tcp-afteraftr-ipv6.pcap")


def test_check_reports_counter_differences(tmp_path):
    r, _, _ = _check(tmp_path, {**EXPECTED, "out-ipv6-packets": 2})
    assert r.returncode == 1
    assert "out-ipv6-packets: 2 -> 1" in r.stderr


def test_bad_configuration_names_file_line_and_leaf(tmp_path):
    text = (VECTORS / "icmp_on_fail.conf").read_text().replace("psid-length 6;", "psid-length 66;", 1)
    bad = tmp_path / "bad.conf"
    bad.write_text(text)
    line = text.splitlines().index(next(l for l in text.splitlines() if "psid-length 66" in l)) + 1
    r, out4, _ = _check(tmp_path, EXPECTED, conf=bad)
    assert r.returncode == 2
    assert f"{bad}:{line}:" in r.stderr and "psid-length" in r.stderr
    assert not out4.exists()


def test_offline_demo_runs():
    r = subprocess.run(LWAFTR + ["demo", "--offline"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "hairpin-ipv4-packets" in r.stdout and "carol -> alice" in r.stdout


def test_demo_runs_live_traffic_through_a_lab_or_says_why_not():
    """As root: the namespace lab, every step as it should be, the lab gone
    afterwards.  Without root or namespaces: the reason, then the offline example."""
    from lwaftr.lab.netns import unavailable

    reason = unavailable()
    r = subprocess.run(LWAFTR + ["demo"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    if reason:
        assert "no live lab here" in r.stdout and "carol -> alice" in r.stdout
        return
    assert "Everything behaved as it should." in r.stdout, r.stdout + r.stderr
    assert "FAILED" not in r.stdout
    for seen in ("0.2.1 echo id", "content intact", "ICMP destination unreachable", "turned round inside the lwAFTR",
                 "configuration reloaded", "MTU 1460", "hairpin-ipv4-packets", "drop-no-source-softwire-ipv6-packets"):
        assert seen in r.stdout, seen
    tag = re.search(r"namespaces (\S+)-\*", r.stdout).group(1)
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"{tag}-" not in left, f"namespaces left behind: {left}"
