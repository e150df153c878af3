"""SNMP: the AgentX codec, what the subagent serves, LWAFTR-MIB (checked by
smilint), and, with net-snmp's real snmpd in namespaces (root; every
namespace and process made and removed here): snmpget/snmpwalk read the data
plane's counters and follow traffic, alarms arrive at snmptrapd as
notifications, and the subagent comes back after snmpd restarts."""
from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from lwaftr import counters as C
from lwaftr.mgmt import agentx as X
from lwaftr.mgmt import snmp as S
from lwaftr.mgmt.snapshot import Snapshot

ROOT = Path(__file__).resolve().parent.parent
MIB = ROOT / "mibs" / "LWAFTR-MIB.txt"
IFX_IN_OCTETS, IFX_IN_PKTS, IFX_OUT_OCTETS, IFX_OUT_PKTS = (".".join(map(str, S.IFX_ENTRY + (c,)))
                                                            for c in (6, 7, 10, 11))
IF_IN_OCTETS = ".".join(map(str, S.IF_ENTRY + (10,)))


def dotted(oid) -> str:
    return ".".join(map(str, oid))


# --- codec and view --------------------------------------------------------------------------------

def test_pdus_round_trip_in_both_byte_orders():
    vbs = [X.VarBind(S.SNMP_TRAP_OID, X.OBJECT_IDENTIFIER, S.ALARM_RAISED),
           X.VarBind((1, 3, 6, 1, 4, 1, 9, 1), X.COUNTER64, 2**64 - 1),
           X.VarBind((1, 2), X.OCTET_STRING, b"abcde"), X.VarBind((1, 3), X.COUNTER32, 7),
           X.VarBind((1, 4), X.NO_SUCH_INSTANCE)]
    raw = X.notify_pdu(5, 9, vbs)
    p = X.decode(raw)
    assert (p.type, p.session, p.packet, p.varbinds) == (X.NOTIFY, 5, 9, vbs)
    # a GetNext from a little-endian master: the header says so and it is honoured
    import struct
    body = b""
    for oid, inc in (((1, 3, 6, 1, 2, 1, 31), 1), ((1, 3, 6, 1, 2, 1, 32), 0)):
        body += struct.pack("<BBBx", len(oid) - 5, oid[4], inc) + struct.pack(f"<{len(oid) - 5}I", *oid[5:])
    le = struct.pack("<BBBxIIII", 1, X.GETNEXT, 0, 3, 4, 5, len(body)) + body
    q = X.decode(le)
    assert q.ranges == [((1, 3, 6, 1, 2, 1, 31), True, (1, 3, 6, 1, 2, 1, 32))]
    assert (q.session, q.transaction, q.packet) == (3, 4, 5)
    # a stream cut anywhere: whole PDUs only, the rest kept
    stream = raw + le
    for cut in range(len(stream) + 1):
        first, rest = X.split(stream[:cut])
        assert b"".join(first) + rest == stream[:cut]
        assert len(first) == (cut >= len(raw)) + (cut == len(stream))
    with pytest.raises(X.AgentXError):
        X.decode(raw[:24] + b"")    # shorter than its header says


def snap() -> Snapshot:
    w0 = {"in-ipv4-bytes": 1000, "in-ipv4-packets": 10, "out-ipv6-bytes": 1400, "out-ipv6-packets": 10,
          "in-ipv6-bytes": 5, "in-ipv6-packets": 1, "out-ipv4-bytes": 2**33 + 3, "out-ipv4-packets": 2}
    w1 = {"in-ipv4-bytes": 1, "in-ipv4-packets": 1, "out-ipv4-bytes": 2, "drop-ttl-zero-ipv4-packets": 4}
    return Snapshot("t", 1, None, {"0": w0, "1": w1})


def test_view_if_rows_and_walks():
    ifs = {7: S.DataInterface("i1", (("0", 4),)), 8: S.DataInterface("b1", (("0", 6),)),
           9: S.DataInterface("s1", (("1", 0),))}
    view = S.build_view(snap(), ifs, {"0": "v4 i1, v6 b1", "1": "on-a-stick s1"})
    got = {dotted(o): v for o, _, v in view}
    assert got[f"{IFX_IN_OCTETS}.7"] == 1000 and got[f"{IFX_OUT_OCTETS}.7"] == 2**33 + 3
    assert got[f"{IFX_IN_OCTETS}.8"] == 5 and got[f"{IFX_OUT_PKTS}.8"] == 10
    assert got[f"{IFX_IN_PKTS}.9"] == 1 and got[f"{IFX_OUT_OCTETS}.9"] == 2      # stick: both families
    assert got[f"{IF_IN_OCTETS}.7"] == 1000
    assert [t for o, t, _ in view if o == S.IF_ENTRY + (16, 7)] == [X.COUNTER32]
    total = S.COUNTERS + (C.INDEX["in-ipv4-bytes"] + 1, 0)
    assert got[dotted(total)] == 1001
    assert got[dotted(S.WORKER_ENTRY + (S.WORKER_INTERFACES, 2))] == b"on-a-stick s1"
    col = S.WORKER_FIRST_COUNTER + C.INDEX["drop-ttl-zero-ipv4-packets"]
    assert got[dotted(S.WORKER_ENTRY + (col, 2))] == 4 and got[dotted(S.WORKER_ENTRY + (col, 1))] == 0
    oids = [o for o, _, _ in view]
    assert oids == sorted(oids) and len(set(oids)) == len(oids)

    def req(type_, ranges, **kw):
        return S.answer(view, X.Pdu(type_, 0, 1, 1, 1, ranges=ranges, **kw))

    # Get: exact, missing instance of a known column, unknown object
    a, b, c = req(X.GET, [(total, False, ()), (S.IFX_ENTRY + (6, 99), False, ()), ((1, 3, 6, 1, 9), False, ())])
    assert (a.type, a.value, b.type, c.type) == (X.COUNTER64, 1001, X.NO_SUCH_INSTANCE, X.NO_SUCH_OBJECT)
    # GetNext: a walk from the module's root visits every object once, in order, then ends
    walked, start, include = [], S.LWAFTR_MIB, False
    end = S.LWAFTR_MIB[:-1] + (S.LWAFTR_MIB[-1] + 1,)
    while True:
        (vb,) = req(X.GETNEXT, [(start, include, end)])
        if vb.type == X.END_OF_MIB_VIEW:
            break
        walked.append(vb.oid)
        start = vb.oid
    assert walked == [o for o in oids if o[:len(S.LWAFTR_MIB)] == S.LWAFTR_MIB]
    (vb,) = req(X.GETNEXT, [(total, True, ())])             # include: the start itself
    assert vb.oid == total
    # GetBulk: one non-repeater, then two columns side by side
    out = req(X.GETBULK, [((1,), False, ()), (S.IFX_ENTRY + (6,), False, ()), (S.IFX_ENTRY + (10,), False, ())],
              non_repeaters=1, max_repetitions=3)
    assert [dotted(v.oid) for v in out[1:]] == [f"{IFX_IN_OCTETS}.7", f"{IFX_OUT_OCTETS}.7", f"{IFX_IN_OCTETS}.8",
                                                f"{IFX_OUT_OCTETS}.8", f"{IFX_IN_OCTETS}.9", f"{IFX_OUT_OCTETS}.9"]
    assert S.build_view(None, ifs, {}) == []             # instance not running: nothing served


def test_data_interfaces_from_worker_specs():
    got = S.data_interfaces([["--v4", "i1", "--v6", "b1"], ["--on-a-stick", "s1"], ["--on-a-stick", "s1"]])
    assert got == [S.DataInterface("i1", (("0", 4),)), S.DataInterface("b1", (("0", 6),)),
                   S.DataInterface("s1", (("1", 0), ("2", 0)))]


# --- the MIB module ------------------------------------------------------------------------------

def test_mib_file_is_generated_from_the_counter_table():
    """mibs/LWAFTR-MIB.txt is what mib_text() writes (regenerate: python -m lwaftr.mgmt.snmp)."""
    assert MIB.read_text() == S.mib_text()
    text = S.mib_text()
    for i, name in enumerate(C.NAMES, 1):
        assert f"{S.descriptor(name)} OBJECT-TYPE" in text and f"::= {{ lwaftrCounters {i} }}" in text
    assert all(len(S.descriptor(n, "lwaftrWorker")) <= 64 for n in C.NAMES)    # the SMIv2 limit


@pytest.mark.skipif(shutil.which("smilint") is None, reason="smilint is not installed (apt-get install smitools)")
def test_mib_passes_smilint(tmp_path):
    r = subprocess.run(["smilint", "-l", "6", "-s", str(MIB)], capture_output=True, text=True,
                       env=dict(os.environ, SMIPATH=str(ROOT / "mibs" / "base")))
    assert r.returncode == 0 and r.stdout + r.stderr == "", r.stdout + r.stderr
    # and it does look: a broken module is reported
    bad = tmp_path / "LWAFTR-MIB.txt"
    bad.write_text(MIB.read_text().replace("SYNTAX      Counter64", "SYNTAX      Counter65", 1))
    r = subprocess.run(["smilint", "-l", "6", str(bad)], capture_output=True, text=True,
                       env=dict(os.environ, SMIPATH=str(ROOT / "mibs" / "base")))
    assert "Counter65" in r.stdout + r.stderr


# --- with snmpd ----------------------------------------------------------------------------------

def _why_not() -> str | None:
    from lwaftr.lab.netns import unavailable
    why = unavailable()
    for tool, pkg in (("snmpd", "snmpd"), ("snmpget", "snmp"), ("snmptrapd", "snmptrapd")):
        if why is None and shutil.which(tool) is None and not os.path.exists(f"/usr/sbin/{tool}"):
            why = f"{tool} is not installed (apt-get install {pkg})"
    return why


needs_snmpd = pytest.mark.skipif(_why_not() is not None, reason=str(_why_not()))


def start_snmpd(ns, tmp: Path, label: str = "snmpd", traps: bool = False):
    conf = tmp / "snmpd.conf"
    conf.write_text("master agentx\n"
                    f"agentXSocket {tmp / 'agentx.sock'}\n"
                    "agentXTimeout 5\n"
                    "agentaddress udp:127.0.0.1:161\n"
                    "rocommunity public 127.0.0.1\n"
                    + ("trap2sink 127.0.0.1:162 public\n" if traps else ""))
    (tmp / "snmp-state").mkdir(exist_ok=True)
    p = ns.popen("env", f"SNMP_PERSISTENT_DIR={tmp / 'snmp-state'}", "MIBS=", "snmpd", "-f", "-Lo", "-C",
                 "-c", str(conf), label=label)
    p.wait_for("NET-SNMP version", stream="stdout", timeout=30)
    return p


def snmp(ns, cmd: str, *oids: str) -> dict[str, int | str]:
    """snmpget/snmpwalk -On in ``ns``: numeric OID -> value."""
    r = ns.run(cmd, "-m", "", "-On", "-v2c", "-c", "public", "-t", "3", "-r", "1", "127.0.0.1", *oids, check=False)
    out = {}
    for line in r.stdout.splitlines():
        m = re.match(r"^\.?([\d.]+) = (\w+): (.*)$", line)
        if m:
            out[m.group(1)] = int(m.group(3)) if m.group(2).startswith(("Counter", "Gauge")) else m.group(3)
    return out


def wait_for(what: str, cond, timeout: float, step: float = 0.2):
    deadline = time.time() + timeout
    while True:
        v = cond()
        if v:
            return v
        assert time.time() < deadline, f"{what}: not within {timeout:g} s"
        time.sleep(step)


@needs_snmpd
def test_counters_over_snmp_follow_the_traffic(tmp_path):
    from lwaftr.config.model import ControlPlane, Instance, InterfaceAddresses, NextHop
    from lwaftr.config.snabb import dump_snabb
    from lwaftr.examples import example_config
    from lwaftr.lab.netns import Lab
    from lwaftr.mgmt.snapshot import read

    with Lab(prefix="snmp") as lab:
        lw, peer = lab.netns("lw"), lab.netns("peer")
        for ns in (lw, peer):
            ns.quiet_ipv6()
        lab.veth(lw, "i1", peer, "u1")
        lab.veth(lw, "b1", peer, "c1")
        peer.addr("u1", "198.51.100.2/24")
        peer.addr("c1", "2001:db8:0:1::2/64")
        peer.route("192.0.2.0/24", "198.51.100.1")
        peer.ethtool_tx_off("u1")
        inst = Instance(device="b1", external_device="i1", queue_id=0,
                        external=InterfaceAddresses(ipaddress.IPv4Address("198.51.100.1").packed,
                                                    bytes.fromhex("020000000101"),
                                                    NextHop(ip=ipaddress.IPv4Address("198.51.100.2").packed)),
                        internal=InterfaceAddresses(ipaddress.IPv6Address("2001:db8:0:1::1").packed,
                                                    bytes.fromhex("020000000102"),
                                                    NextHop(ip=ipaddress.IPv6Address("2001:db8:0:1::2").packed)))
        conf = tmp_path / "lw.conf"
        conf.write_text(dump_snabb(replace(example_config(), instances=[inst], name=None,
                                           control_plane=ControlPlane(external_prefix_length=24,
                                                                      internal_prefix_length=64))))
        run_dir = tmp_path / "run"
        os.environ["LWAFTR_RUN_DIR"] = str(run_dir)
        try:
            (tmp_path / "snmptrapd.conf").write_text("disableAuthorization yes\nsnmpTrapdAddr udp:127.0.0.1:162\n")
            trapd = lw.popen("env", "MIBS=", "snmptrapd", "-f", "-Lo", "-On", "-C", "-c",
                             str(tmp_path / "snmptrapd.conf"), label="snmptrapd")
            trapd.wait_for("NET-SNMP version", stream="stdout", timeout=30)
            snmpd = start_snmpd(lw, tmp_path, traps=True)
            aftr = lw.popen("env", f"LWAFTR_RUN_DIR={run_dir}", sys.executable, "-m", "lwaftr", "run",
                            "--conf", str(conf), "--name", "n", "--snmp-agentx", str(tmp_path / "agentx.sock"),
                            label="lwaftr")
            aftr.wait_for(r"SNMP: AgentX session \d+ open", timeout=60)
            aftr.wait_for("worker 0 ready", timeout=60)
            idx = {d: int(lw.run("cat", f"/sys/class/net/{d}/ifindex").stdout) for d in ("i1", "b1")}
            oids = [f"{IFX_IN_OCTETS}.{idx['i1']}", f"{IFX_IN_PKTS}.{idx['i1']}",
                    f"{IFX_OUT_OCTETS}.{idx['b1']}", f"{IFX_OUT_PKTS}.{idx['b1']}", f"{IF_IN_OCTETS}.{idx['i1']}"]

            def send(n: int, to: str = "192.0.2.2", port: int = 5000) -> None:
                # carol owns 192.0.2.2 whole: each is tunnelled to her B4
                peer.python("import socket,sys,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
                            "for i in range(int(sys.argv[1])):\n"
                            "    s.sendto(bytes(100),(sys.argv[2],int(sys.argv[3]))); time.sleep(0.002)",
                            str(n), to, str(port))

            def settled() -> dict[str, int]:
                """Counters that stopped moving, and what snmpget says of them then."""
                last = None
                for _ in range(50):
                    time.sleep(0.3)
                    now = read("n").totals()
                    if now == last:
                        return now
                    last = now
                raise AssertionError("the counters do not settle")

            send(5)                       # neighbours resolved, first frames through
            before = settled()
            got0 = snmp(lw, "snmpget", *oids)
            send(200)
            after = settled()
            got1 = snmp(lw, "snmpget", *oids)
            frame = 14 + 20 + 8 + 100
            assert after["in-ipv4-packets"] - before["in-ipv4-packets"] == 200
            assert after["out-ipv6-packets"] - before["out-ipv6-packets"] == 200
            want0 = [before["in-ipv4-bytes"], before["in-ipv4-packets"], before["out-ipv6-bytes"],
                     before["out-ipv6-packets"], before["in-ipv4-bytes"] % 2**32]
            assert [got0[o] for o in oids] == want0, got0
            assert [got1[o] - got0[o] for o in oids] == [200 * frame, 200, 200 * (frame + 40), 200, 200 * frame]

            # snmpwalk of LWAFTR-MIB: every counter, summed and per worker, as the instance counts it
            # (a counter that moved during the walk, ARP or NDP say, lies between the two reads)
            lo = read("n").totals()
            walk = snmp(lw, "snmpwalk", dotted(S.OBJECTS))
            hi = read("n").totals()
            for i, name in enumerate(C.NAMES, 1):
                col = S.WORKER_FIRST_COUNTER + i - 1
                for oid in (S.COUNTERS + (i, 0), S.WORKER_ENTRY + (col, 1)):
                    assert lo.get(name, 0) <= walk[dotted(oid)] <= hi.get(name, 0), name
            assert walk[dotted(S.COUNTERS + (C.INDEX["in-ipv4-packets"] + 1, 0))] == after["in-ipv4-packets"]
            assert walk[dotted(S.WORKER_ENTRY + (S.WORKER_INTERFACES, 1))] == '"v4 i1, v6 b1"'
            bulk = snmp(lw, "snmpbulkwalk", dotted(S.OBJECTS))     # GetBulk through snmpd: the same
            assert bulk.keys() == walk.keys() and len(bulk) == 2 * C.N_COUNTERS + 2      # totals; one worker row
            # snmpd's own IF-MIB rows are still there, for the other interfaces (lo, the TAPs)
            assert len(snmp(lw, "snmpwalk", dotted(S.IFX_ENTRY + (1,)))) >= 4

            # An alarm, end to end: port 100 of 192.0.2.1 is no softwire's, so each packet is
            # answered with an ICMPv4 error, more than the limiter lets out (200 per 2 s).
            alarms = run_dir / "n" / "workers" / "0" / "alarms.json"
            assert json.loads(alarms.read_text()) == {}
            send(300, "192.0.2.1", 100)
            trap = trapd.wait_for(rf"{dotted(S.ALARM_RAISED)}.*?icmp-rate-limit.*", stream="stdout", timeout=20)
            assert "errors suppressed" in trap
            assert "icmp-rate-limit" in json.loads(alarms.read_text())

            aftr.send_signal(15)
            assert aftr.popen.wait(60) == 0, aftr.stderr[-3000:]
            snmpd.stop()
        finally:
            os.environ.pop("LWAFTR_RUN_DIR", None)


@needs_snmpd
def test_alarm_notifications_and_snmpd_restarts(tmp_path, monkeypatch):
    """The subagent itself (as the supervisor runs it) against snmpd, whose
    notifications go to snmptrapd; snmpd is restarted under it."""
    from lwaftr.io.state import StateDir
    from lwaftr.lab.netns import Lab

    monkeypatch.setenv("LWAFTR_RUN_DIR", str(tmp_path / "run"))
    worker = StateDir("n", worker="0")
    top = tmp_path / "run" / "n"
    (top / "pid").write_text(f"{os.getpid()}\n")
    (top / "counters.json").write_text(json.dumps({"names": list(C.NAMES), "pid": os.getpid(),
                                                   "started": time.time()}))
    worker.counters[C.IN_IPV4_PACKETS] = 42
    worker.write_alarms({})
    agent = S.Subagent.for_run("n", [["--on-a-stick", "nonexistent0"]], str(tmp_path / "agentx.sock"))
    in_ipv4 = dotted(S.COUNTERS + (C.INDEX["in-ipv4-packets"] + 1, 0))
    raised, cleared = dotted(S.ALARM_RAISED), dotted(S.ALARM_CLEARED)
    with Lab(prefix="snmpn") as lab:
        ns = lab.netns("snmp")
        ns.run("ip", "link", "set", "lo", "up")
        (tmp_path / "snmptrapd.conf").write_text("disableAuthorization yes\nsnmpTrapdAddr udp:127.0.0.1:162\n")
        trapd = ns.popen("env", "MIBS=", "snmptrapd", "-f", "-Lo", "-On", "-C", "-c",
                         str(tmp_path / "snmptrapd.conf"), label="snmptrapd")
        trapd.wait_for("NET-SNMP version", stream="stdout", timeout=30)
        snmpd = start_snmpd(ns, tmp_path, traps=True)
        agent.start()
        try:
            wait_for("the subagent's counters through snmpd", lambda: snmp(ns, "snmpget", in_ipv4).get(in_ipv4) == 42, 20)
            # raised: name, worker and text; then cleared, with the text it was raised with
            worker.write_alarms({"reassembly-limit": "reassembly limits hit: fragments dropped (+3)"})
            trapd.wait_for(rf"{raised}.*?reassembly-limit.*?\"0\".*?fragments dropped \(\+3\)", stream="stdout",
                           timeout=20)
            worker.write_alarms({})
            trapd.wait_for(rf"{cleared}.*?reassembly-limit.*?fragments dropped \(\+3\)", stream="stdout", timeout=20)
            assert trapd.stdout.count(raised) == 1 and trapd.stdout.count(cleared) == 1

            # snmpd restarts: the subagent opens a new session and is served again
            snmpd.stop()
            assert snmp(ns, "snmpget", in_ipv4) == {}
            worker.counters[C.IN_IPV4_PACKETS] = 43
            snmpd = start_snmpd(ns, tmp_path, label="snmpd2", traps=True)
            wait_for("the subagent back after snmpd's restart",
                     lambda: snmp(ns, "snmpget", in_ipv4).get(in_ipv4) == 43, 20)
            assert agent.sessions == 2
            worker.write_alarms({"next-hop-unresolved": "next hop 198.51.100.2 unresolved: its traffic is dropped"})
            trapd.wait_for(rf"{raised}.*?next-hop-unresolved.*?198\.51\.100\.2", stream="stdout", timeout=20)
        finally:
            agent.stop()
            worker.close()
