"""Traffic for the lab: end points that check what they move, and probes.

Lab only, not part of the router.  Run inside a namespace as
``python -m lwaftr.lab.apps COMMAND ...``; each prints JSON lines on stdout
and, for servers, ``listening`` on stderr once ready:

``tcp-serve --port P [--send N --seed S] [--count K]`` / ``tcp-connect HOST PORT [--send N --seed S]``
    Over one TCP connection each side sends ``N`` deterministic pseudo-random
    bytes (``random.Random(seed)``) while it reads everything the other side
    sends, then prints bytes and SHA-256 of what it sent and received, and
    the peer's address; compare with :func:`expected`.  ``--pause-at B
    --resume-file F`` makes the client stop after ``B`` bytes, create
    ``F.paused`` and wait for ``F`` (a connection held open across an event).
``soak-serve --port P --send N`` / ``soak HOST PORT --send N --duration S [--timeout T]``
    A soak: the server takes connections concurrently (a thread each) and
    on each sends ``N`` bytes while it reads until EOF; the client makes
    one connection after another for ``S`` seconds, each exchanging ``N``
    bytes both ways, and prints one JSON line per transfer (start, duration,
    the longest wait for data, bytes and SHA-256 checks, or the error), with
    socket timeout ``T``.
``udp-serve --port P [--count K]``
    Prints length, SHA-256, the first bytes and the sender of each datagram.
``icmp-watch``
    Prints the source and identifier of every ICMP echo request received.
``unreachable-probe DEST PORT``
    Sends UDP to DEST:PORT until an ICMP destination unreachable about it
    comes back (or 40 tries); prints how many it sent and what came back.
``big-udp DEST PORT (--df | --no-df)``
    Sends one 1500-byte IPv4/UDP packet (raw, the link MTU, not the path MTU
    learnt before); with ``--df`` waits for ICMP "fragmentation needed" and
    prints who sent it and the MTU it gives.
``inject DEV MAC BR DEST B4,SPORT,TEXT ...``
    Sends, from a packet socket on DEV to MAC, IPv4-in-IPv6 packets from B4
    to BR, each holding UDP from 192.0.2.1:SPORT to DEST:9999 with TEXT (to
    play a B4, or a spoofer, from anywhere on the B4 side).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import socket
import struct
import sys
import threading
import time

CHUNK = 65536


def payload(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def expected(n: int, seed: int) -> str:
    """SHA-256 of the ``n`` bytes a side with ``seed`` sends."""
    return hashlib.sha256(payload(n, seed)).hexdigest()


def _sender(sock: socket.socket, data: bytes, pause_at: int | None, resume: str | None, out: dict) -> None:
    try:
        view = memoryview(data)
        i = 0
        while i < len(view):
            if pause_at is not None and i == pause_at:
                open(resume + ".paused", "w").close()
                while not os.path.exists(resume):
                    time.sleep(0.02)
            end = min(len(view), i + CHUNK, pause_at if pause_at is not None and i < pause_at else len(view))
            sock.sendall(view[i:end])
            i = end
        sock.shutdown(socket.SHUT_WR)
        out["sent"] = len(data)
        out["sent_sha256"] = hashlib.sha256(data).hexdigest()
    except OSError as e:
        out["send_error"] = str(e)


def exchange(sock: socket.socket, n: int, seed: int, pause_at: int | None = None,
             resume: str | None = None) -> dict:
    """Send ``n`` bytes and receive until EOF, at the same time."""
    result: dict = {"sent": 0}
    t = threading.Thread(target=_sender, args=(sock, payload(n, seed), pause_at, resume, result), daemon=True)
    t.start()
    h = hashlib.sha256()
    got = 0
    while True:
        b = sock.recv(1 << 20)
        if not b:
            break
        h.update(b)
        got += len(b)
    t.join()
    result.update(received=got, received_sha256=h.hexdigest())
    return result


def _listen(a, backlog: int) -> socket.socket:
    """The server's listening socket on ``a.bind``:``a.port``; says "listening" when ready."""
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((a.bind, a.port))
    ls.listen(backlog)
    print("listening", file=sys.stderr, flush=True)
    return ls


def tcp_serve(a) -> int:
    ls = _listen(a, 16)
    for _ in range(a.count):
        c, peer = ls.accept()
        with c:
            r = exchange(c, a.send, a.seed)
        r["peer"] = list(peer)
        print(json.dumps(r), flush=True)
    return 0


def tcp_connect(a) -> int:
    s = socket.create_connection((a.host, a.port), timeout=a.timeout)
    with s:
        r = exchange(s, a.send, a.seed, a.pause_at, a.resume_file)
        r["local"] = list(s.getsockname())
    print(json.dumps(r), flush=True)
    return 0 if "send_error" not in r else 1


def _soak_one(c: socket.socket, n: int, seed: int, timeout: float) -> dict:
    """Exchange ``n`` bytes both ways on ``c``; the longest wait between two reads is noted."""
    c.settimeout(timeout)
    data = payload(n, seed)
    result: dict = {"sent": 0}
    t = threading.Thread(target=_sender, args=(c, data, None, None, result), daemon=True)
    t.start()
    h = hashlib.sha256()
    got, gap, last = 0, 0.0, time.monotonic()
    try:
        while True:
            b = c.recv(1 << 20)
            now = time.monotonic()
            gap, last = max(gap, now - last), now
            if not b:
                break
            h.update(b)
            got += len(b)
    except OSError as e:
        result["recv_error"] = f"{type(e).__name__}: {e}"
    t.join(timeout)
    result.update(received=got, received_sha256=h.hexdigest(), max_gap=round(gap, 4))
    return result


def soak_serve(a) -> int:
    ls = _listen(a, 64)
    lock = threading.Lock()

    def serve(c: socket.socket, peer) -> None:
        with c:
            r = _soak_one(c, a.send, a.seed, a.timeout)
        r["peer"] = list(peer)
        with lock:
            print(json.dumps(r), flush=True)

    while True:
        c, peer = ls.accept()
        threading.Thread(target=serve, args=(c, peer), daemon=True).start()


def soak(a) -> int:
    """Transfers one after another for ``a.duration`` seconds (or until ``a.stop_file``
    exists, if given); one JSON line each."""
    end = time.monotonic() + a.duration
    seq = 0
    while time.monotonic() < end and not (a.stop_file and os.path.exists(a.stop_file)):
        t0 = time.monotonic()
        r: dict = {"seq": seq, "start": round(time.time(), 4)}
        try:
            s = socket.create_connection((a.host, a.port), timeout=a.timeout)
        except OSError as e:
            r.update(error=f"connect: {type(e).__name__}: {e}", duration=round(time.monotonic() - t0, 4))
        else:
            r["connect"] = round(time.monotonic() - t0, 4)
            with s:
                r["local"] = list(s.getsockname())
                r.update(_soak_one(s, a.send, a.seed, a.timeout))
            r["duration"] = round(time.monotonic() - t0, 4)
            r["ok"] = (r.get("sent") == a.send and r["received"] == a.expect
                       and r["received_sha256"] == expected(a.expect, a.peer_seed)
                       and "recv_error" not in r and "send_error" not in r)
        r.setdefault("ok", False)
        print(json.dumps(r), flush=True)
        seq += 1
    return 0


def udp_serve(a) -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((a.bind, a.port))
    print("listening", file=sys.stderr, flush=True)
    for _ in range(a.count):
        data, peer = s.recvfrom(65535)
        print(json.dumps({"length": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                          "head": data[:32].decode("latin-1"), "peer": list(peer)}), flush=True)
    return 0


def icmp_watch(a) -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    print("listening", file=sys.stderr, flush=True)
    while True:
        p, (src, _) = s.recvfrom(65535)
        ihl = (p[0] & 15) * 4
        if p[ihl] == 8:
            print(json.dumps({"from": src, "id": int.from_bytes(p[ihl + 4:ihl + 6], "big")}), flush=True)


def _icmp_about(p: bytes, dest: str, port: int | None = None) -> tuple[int, int, bytes] | None:
    """(type, code, ICMP header) of an ICMP error ``p`` (an IPv4 packet) about
    a packet to ``dest`` (and UDP/TCP ``port``), else None."""
    ihl = (p[0] & 15) * 4
    icmp, inner = p[ihl:ihl + 8], p[ihl + 8:]
    if len(inner) < 24 or icmp[0] not in (3, 11, 12) or socket.inet_ntoa(inner[16:20]) != dest:
        return None
    iihl = (inner[0] & 15) * 4
    if port is not None and int.from_bytes(inner[iihl + 2:iihl + 4], "big") != port:
        return None
    return icmp[0], icmp[1], icmp


def unreachable_probe(a) -> int:
    icmp = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    icmp.settimeout(0.5)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for sent in range(1, a.tries + 1):
        udp.sendto(b"anyone there?", (a.dest, a.port))
        try:
            while True:
                p, (src, _) = icmp.recvfrom(65535)
                got = _icmp_about(p, a.dest, a.port)
                if got:
                    print(json.dumps({"sent": sent, "from": src, "type": got[0], "code": got[1]}))
                    return 0
        except socket.timeout:
            pass
    print(json.dumps({"sent": a.tries}))
    return 0


BIG_PAYLOAD = bytes(range(256)) * 5 + bytes(range(192))      # 1472 bytes: a 1500-byte IPv4/UDP packet


def big_udp(a) -> int:
    udp = struct.pack("!HHHH", 33000, a.port, 8 + len(BIG_PAYLOAD), 0) + BIG_PAYLOAD
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0x1234, 0x4000 if a.df else 0, 64, 17, 0,
                     socket.inet_aton("0.0.0.0"), socket.inet_aton(a.dest))   # the kernel fills source, checksum
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)  # header included
    raw.setsockopt(socket.IPPROTO_IP, 10, 3)     # IP_MTU_DISCOVER = IP_PMTUDISC_PROBE: the link MTU
    icmp = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) if a.df else None
    raw.sendto(ip + udp, (a.dest, 0))
    result: dict = {"sent": len(ip) + len(udp), "df": a.df}
    if icmp is not None:
        icmp.settimeout(a.wait)
        try:
            while True:
                p, (src, _) = icmp.recvfrom(65535)
                got = _icmp_about(p, a.dest, a.port)
                if got and got[:2] == (3, 4):
                    result.update({"from": src, "mtu": int.from_bytes(got[2][6:8], "big")})
                    break
        except socket.timeout:
            pass
    print(json.dumps(result))
    return 0


def _checksum(b: bytes) -> int:
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    s = (s >> 16) + (s & 0xFFFF)
    return ~(s + (s >> 16)) & 0xFFFF


def tunnelled(b4: str, br: str, src: str, sport: int, dest: str, dport: int, data: bytes) -> bytes:
    """IPv6 (B4 -> BR) holding IPv4/UDP src:sport -> dest:dport (UDP checksum 0: none)."""
    udp = struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                               socket.inet_aton(src), socket.inet_aton(dest)))
    ip[10:12] = struct.pack("!H", _checksum(bytes(ip)))
    inner = bytes(ip) + udp
    return struct.pack("!IHBB16s16s", 0x60000000, len(inner), 4, 64, socket.inet_pton(socket.AF_INET6, b4),
                       socket.inet_pton(socket.AF_INET6, br)) + inner


def inject(a) -> int:
    own = bytes.fromhex(open(f"/sys/class/net/{a.dev}/address").read().strip().replace(":", ""))
    eth = bytes.fromhex(a.mac.replace(":", "")) + own + struct.pack("!H", 0x86DD)
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((a.dev, 0))
    for spec in a.packets:
        b4, sport, text = spec.split(",", 2)
        s.send(eth + tunnelled(b4, a.br, a.src, int(sport), a.dest, a.dport, text.encode()))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lwaftr.lab.apps")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("tcp-serve")
    s.add_argument("--bind", default="0.0.0.0")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--count", type=int, default=1, help="connections to serve, one after another")
    c = sub.add_parser("tcp-connect")
    c.add_argument("host")
    c.add_argument("port", type=int)
    c.add_argument("--pause-at", type=int)
    c.add_argument("--resume-file")
    c.add_argument("--timeout", type=float, default=60)
    for x in (s, c):
        x.add_argument("--send", type=int, default=0, help="bytes to send")
        x.add_argument("--seed", type=int, default=0)
    ss = sub.add_parser("soak-serve")
    ss.add_argument("--bind", default="0.0.0.0")
    ss.add_argument("--port", type=int, required=True)
    ss.add_argument("--send", type=int, default=0)
    ss.add_argument("--seed", type=int, default=0)
    ss.add_argument("--timeout", type=float, default=30)
    sk = sub.add_parser("soak")
    sk.add_argument("host")
    sk.add_argument("port", type=int)
    sk.add_argument("--send", type=int, required=True, help="bytes to send on each connection")
    sk.add_argument("--seed", type=int, default=0)
    sk.add_argument("--expect", type=int, required=True, help="bytes the server sends on each connection")
    sk.add_argument("--peer-seed", type=int, default=0, help="the server's --seed")
    sk.add_argument("--duration", type=float, required=True)
    sk.add_argument("--timeout", type=float, default=30)
    sk.add_argument("--stop-file", help="start no new transfer once this file exists")
    u = sub.add_parser("udp-serve")
    u.add_argument("--bind", default="0.0.0.0")
    u.add_argument("--port", type=int, required=True)
    u.add_argument("--count", type=int, default=1)
    sub.add_parser("icmp-watch")
    r = sub.add_parser("unreachable-probe")
    r.add_argument("dest")
    r.add_argument("port", type=int)
    r.add_argument("--tries", type=int, default=40)
    b = sub.add_parser("big-udp")
    b.add_argument("dest")
    b.add_argument("port", type=int)
    b.add_argument("--df", action=argparse.BooleanOptionalAction, required=True)
    b.add_argument("--wait", type=float, default=1.0, help="seconds to wait for the ICMP error")
    i = sub.add_parser("inject")
    i.add_argument("dev")
    i.add_argument("mac")
    i.add_argument("br")
    i.add_argument("dest")
    i.add_argument("packets", nargs="+", metavar="B4,SPORT,TEXT")
    i.add_argument("--src", default="192.0.2.1")
    i.add_argument("--dport", type=int, default=9999)
    a = p.parse_args(argv)
    return {"tcp-serve": tcp_serve, "tcp-connect": tcp_connect, "udp-serve": udp_serve, "icmp-watch": icmp_watch,
            "soak-serve": soak_serve, "soak": soak,
            "unreachable-probe": unreachable_probe, "big-udp": big_udp, "inject": inject}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
