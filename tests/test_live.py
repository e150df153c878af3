"""``lwaftr run`` forwarding between veth pairs in namespaces the test creates (needs root).

Namespace ``lw`` holds the lwAFTR (i1 Internet side, b1 B4 side); namespace
``peer`` holds the other ends (i0, b0), where packet sockets play the
Internet host and the B4s.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from lwaftr.config.snabb import dump_snabb
from lwaftr.examples import example_config

LW, PEER = f"lwaftr-lw-{os.getpid()}", f"lwaftr-peer-{os.getpid()}"
MACS = {"i1": "02:00:00:00:00:01", "b1": "02:00:00:00:00:02", "i0": "02:00:00:00:00:11", "b0": "02:00:00:00:00:22"}


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


@pytest.fixture
def lab():
    sh("ip", "netns", "add", LW)
    sh("ip", "netns", "add", PEER)
    try:
        for a, b in (("i1", "i0"), ("b1", "b0")):
            sh("ip", "-n", LW, "link", "add", a, "type", "veth", "peer", "name", b, "netns", PEER)
        for ns, devs in ((LW, ("i1", "b1")), (PEER, ("i0", "b0"))):
            for d in devs:
                sh("ip", "netns", "exec", ns, "sysctl", "-qw", f"net.ipv6.conf.{d}.disable_ipv6=1")
                sh("ip", "-n", ns, "link", "set", d, "address", MACS[d], "up")
        yield
    finally:
        sh("ip", "netns", "del", LW)
        sh("ip", "netns", "del", PEER)


PEER_BODY = textwrap.dedent('''
    import socket, sys, time
    from lwaftr.examples import example_traffic
    traffic = example_traffic()
    socks = {}
    for dev in ("i0", "b0"):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
        s.bind((dev, 3))
        s.setblocking(False)
        socks[dev] = s
    want = {"i0": set(), "b0": set()}
    for line in sys.stdin.read().splitlines():
        if line.strip():
            dev, hexed = line.split()
            want[dev].add(bytes.fromhex(hexed))
    sent = {f for _, _, f in traffic}
    seen = {"i0": [], "b0": []}
    deadline = time.time() + float(sys.argv[1])
    while time.time() < deadline:
        for _, side, f in traffic:
            socks["i0" if side == "v4" else "b0"].send(f)
        time.sleep(0.2)
        for dev, s in socks.items():
            while True:
                try:
                    data, addr = s.recvfrom(65535)
                except BlockingIOError:
                    break
                if addr[2] != socket.PACKET_OUTGOING and data not in sent:
                    seen[dev].append(data)
        if want["i0"] <= set(seen["i0"]) and want["b0"] <= set(seen["b0"]):
            break                       # everything expected has come out (the first batches may be slow)
    print(len(seen["i0"]), len(seen["b0"]))
    for dev in ("i0", "b0"):
        for d in sorted(set(seen[dev])):
            print(dev, d.hex())
''')


def _peer(want4: list[bytes], want6: list[bytes], seconds: float = 60):
    """Send the example traffic from the peer side until ``want4`` has come out
    of i1 and ``want6`` out of b1 (or time runs out); returns what came out."""
    expected = "".join(f"i0 {f.hex()}\n" for f in want4) + "".join(f"b0 {f.hex()}\n" for f in want6)
    r = subprocess.run(["ip", "netns", "exec", PEER, sys.executable, "-c", PEER_BODY, str(seconds)],
                       input=expected, capture_output=True, text=True, timeout=seconds + 60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split("\n")
    out = {"i0": set(), "b0": set()}
    for line in lines[1:]:
        if line.strip():
            dev, hexed = line.split()
            out[dev].add(bytes.fromhex(hexed))
    return out


@pytest.mark.parametrize("io", ["afpacket", "xdp"])
def test_run_forwards_live_and_survives_a_bad_reload(lab, tmp_path, io):
    from lwaftr.dataplane.engine import Engine
    from lwaftr.examples import example_traffic

    conf = tmp_path / "lw.conf"
    conf.write_text(dump_snabb(example_config()))
    # What the data plane must send, from the same frames through check's path.
    traffic = example_traffic()
    eng = Engine(example_config())
    exp4, exp6, *_ = eng.process_frames([f for _, s, f in traffic if s == "v4"], [f for _, s, f in traffic if s == "v6"],
                                    time.monotonic())
    log = tmp_path / "run.log"
    with open(log, "w") as err_file:
        proc = subprocess.Popen(["ip", "netns", "exec", LW, sys.executable, "-m", "lwaftr", "run", "--conf",
                                 str(conf), "--v4", "i1", "--v6", "b1", "--io", io, "--name", f"live-{io}"],
                                stdout=subprocess.PIPE, stderr=err_file, text=True)
    try:
        got = _peer(exp4, exp6)
        assert set(exp4) <= got["i0"] and set(exp6) <= got["b0"], "live output differs from check's"
        # A bad configuration on SIGHUP is refused; forwarding goes on with the old one
        # (checked once the refusal is logged: before it, the old one forwards anyway).
        conf.write_text("softwire-config { nonsense; }")
        proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 30
        while "reload refused" not in log.read_text():
            assert proc.poll() is None and time.time() < deadline, log.read_text()[-2000:]
            time.sleep(0.05)
        got = _peer([], exp6, 20)
        assert set(exp6) <= got["b0"]
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    err = log.read_text()
    assert proc.returncode == 0, err
    assert f"i1 (af_{io.replace('afpacket', 'packet')}), b1 (af_{io.replace('afpacket', 'packet')})" in err
    counters = json.loads(out)
    assert counters["out-ipv6-packets"] > 0 and counters["out-ipv4-packets"] > 0


UDP_BODY = textwrap.dedent('''
    import socket, sys, time
    from scapy.layers.inet import IP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Ether
    cap = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x86dd))
    cap.bind(("b0", 0x86dd))
    cap.settimeout(1)
    app = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    deadline = time.time() + 30
    while time.time() < deadline:
        app.sendto(b"checksum offload test", ("192.0.2.1", 4100))   # alice's port on the shared address
        try:
            data, addr = cap.recvfrom(65535)
        except socket.timeout:
            continue
        if not Ether(data).haslayer(IP):
            continue        # the kernel's own IPv6 (MLD, NDP) through the control-plane TAP
        inner = Ether(data)[IPv6][IP]
        sent = inner[UDP].chksum
        del inner[UDP].chksum
        print(sent == IP(bytes(inner))[UDP].chksum, IP(bytes(Ether(data)[IPv6].payload))[UDP].load.decode())
        break
''')


def test_checksum_offloaded_by_a_local_stack_is_completed(lab, tmp_path):
    """A host's kernel sending UDP over veth leaves the checksum to 'hardware';
    the lwAFTR must finish it before tunnelling the packet (TP_STATUS_CSUMNOTREADY)."""
    conf = tmp_path / "lw.conf"
    conf.write_text(dump_snabb(example_config()))
    sh("ip", "-n", PEER, "addr", "add", "203.0.113.7/24", "dev", "i0")
    sh("ip", "-n", PEER, "route", "add", "192.0.2.0/24", "dev", "i0")
    sh("ip", "-n", PEER, "neigh", "add", "192.0.2.1", "lladdr", MACS["i1"], "dev", "i0")
    sh("ip", "netns", "exec", PEER, "ethtool", "-K", "i0", "tx", "on")   # offload on: partial checksums
    proc = subprocess.Popen(["ip", "netns", "exec", LW, sys.executable, "-m", "lwaftr", "run", "--conf", str(conf),
                             "--v4", "i1", "--v6", "b1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        r = subprocess.run(["ip", "netns", "exec", PEER, sys.executable, "-c", UDP_BODY],
                           capture_output=True, text=True, timeout=90)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert r.stdout.split() == ["True", "checksum", "offload", "test"], r.stdout + r.stderr
