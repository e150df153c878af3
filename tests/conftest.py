"""Shared test fixtures: where the reference vectors live, small packet helpers, CI rules."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from hypothesis import settings

ROOT = Path(__file__).resolve().parent.parent
# Snabb lwAFTR's end-to-end vectors, carried by the repository (tests/vectors/NOTICE).
VECTORS = ROOT / "tests" / "vectors"
sys.path.insert(0, str(Path(__file__).resolve().parent))

# CI (.ci/run sets LWAFTR_CI=1): Hypothesis draws the same examples every run, so a
# red CI is reproducible and a green one is not luck; locally it explores at random.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
if os.environ.get("LWAFTR_CI"):
    settings.load_profile("ci")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI a skipped test is a failure: everything the suite holds must run there."""
    if not os.environ.get("LWAFTR_CI") or exitstatus != 0:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) + reporter.stats.get("xfailed", []) if reporter else []
    if skipped:
        reporter.write_line(f"LWAFTR_CI: {len(skipped)} test(s) skipped; in CI every test must run:", red=True)
        for rep in skipped[:20]:
            reporter.write_line(f"  {rep.nodeid}: {rep.longrepr[-1] if isinstance(rep.longrepr, tuple) else ''}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def yang_leaves(text: str, header: str) -> set[str]:
    """The names of the leaves inside the YANG block that starts with ``header``
    (e.g. ``container softwire-state``), nested blocks included."""
    import re
    start = text.index("{", text.index(header))
    depth, i = 0, start
    while True:
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            break
        i += 1
    return set(re.findall(r"leaf ([a-z0-9-]+)", text[start:i]))


def rfc4861_expected_ns(frame: bytes) -> bytes:
    """Rewrite an address-resolution NS sent to the target's unicast address
    and the broadcast MAC into the RFC 4861 7.2.2 form: to the target's
    solicited-node multicast address (ff02::1:ffXX:XXXX) and its multicast
    MAC (33:33:ff:XX:XX:XX), checksum recomputed."""
    from scapy.layers.inet6 import IPv6, ICMPv6ND_NS
    from scapy.layers.l2 import Ether
    import ipaddress

    p = Ether(frame)
    if ICMPv6ND_NS not in p:
        return frame
    target = ipaddress.IPv6Address(p[ICMPv6ND_NS].tgt).packed
    snm = bytes.fromhex("ff02" + "00" * 9 + "01ff") + target[13:]
    p[Ether].dst = "33:33:" + ":".join(f"{b:02x}" for b in snm[12:])
    p[IPv6].dst = str(ipaddress.IPv6Address(snm))
    del p[ICMPv6ND_NS].cksum
    return bytes(p)
