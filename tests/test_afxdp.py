"""AF_XDP port on a veth pair in a network namespace the test creates (needs root).

Nothing here skips: if the kernel or libxdp refuses AF_XDP, these tests fail
and say why.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap

import pytest

NS = f"lwaftr-xdp-{os.getpid()}"


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


@pytest.fixture
def netns():
    sh("ip", "netns", "add", NS)
    try:
        sh("ip", "-n", NS, "link", "add", "va", "numtxqueues", "1", "numrxqueues", "1",
           "type", "veth", "peer", "name", "vb", "numtxqueues", "1", "numrxqueues", "1")
        for dev in ("va", "vb"):
            sh("ip", "netns", "exec", NS, "sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=1")
            sh("ip", "-n", NS, "link", "set", dev, "up")
        yield NS
    finally:
        sh("ip", "netns", "del", NS)


def run_in(netns: str, body: str) -> str:
    r = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", COMMON + textwrap.dedent(body)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout.strip()


COMMON = textwrap.dedent('''
    import select, socket, subprocess, time
    import numpy as np
    from lwaftr.dataplane.pool import PacketPool
    from lwaftr.io.afxdp import XdpPort

    ETHERTYPE = b"\\x88\\xb5"          # IEEE local experimental: nothing else answers it
    def frame(i, size):
        return bytes([2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2]) + ETHERTYPE + i.to_bytes(4, "big") + bytes(size - 18)

    def peer_socket():
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x88b5))
        s.bind(("vb", 0x88b5))
        s.setsockopt(socket.SOL_SOCKET, 33, 1 << 25)   # SO_RCVBUFFORCE: hold every frame sent
        return s

    def receive_all(port, pool, n, batch):
        got, deadline = [], time.time() + 10
        while len(got) < n and time.time() < deadline:
            select.select([port], [], [], 0.2)
            slots, flags = port.receive(pool, batch)
            assert not flags.any()
            d = np.diff(slots)
            assert (d > 0).all() or (d < 0).all(), slots    # copied into slots taken in address order
            got += pool.frames(slots)
            pool.free(slots)
        return [g for g in got if g[12:14] == ETHERTYPE]

    def peer_receive(peer, n):
        peer.settimeout(5)
        seen = []
        while len(seen) < n:
            data, addr = peer.recvfrom(65535)
            if addr[2] != socket.PACKET_OUTGOING:
                seen.append(data)
        return seen

    def xdp_attached():
        return "prog/xdp" in subprocess.run(["ip", "-d", "link", "show", "va"], capture_output=True,
                                             text=True).stdout
''')


def test_frames_move_byte_for_byte_both_ways(netns):
    out = run_in(netns, '''
        frames = [frame(i, 60 + (i * 37) % 1400) for i in range(300)] + [frame(300 + i, 1514) for i in range(40)]
        pool = PacketPool(1024)
        pool.free_list[:] = np.random.default_rng(7).permutation(pool.free_list)   # as drops leave it
        port = XdpPort("va")
        assert xdp_attached()
        peer = peer_socket()

        # Receive: frames sent into vb come out of the XDP socket on va, in order, byte for byte.
        for f in frames:
            peer.send(f)
        got = receive_all(port, pool, len(frames), 64)
        assert got == frames, (len(got), len(frames), port.stats())

        # Transmit: slots sent on the XDP socket arrive at vb, in order, byte for byte.
        slots = pool.store(frames)
        assert port.send(pool, slots) == len(frames)
        pool.free(slots)
        seen = peer_receive(peer, len(frames))
        assert seen == frames
        assert pool.n_free[0] == pool.n_slots
        st = port.stats()
        port.close()
        assert not xdp_attached()                      # close() detached the program
        print("ok", len(got), len(seen), port.mode, "zerocopy" if port.zerocopy else "copy", st["rx_dropped"])
    ''')
    assert out.split()[:3] == ["ok", "340", "340"], out
    assert out.split()[-1] == "0", out


def test_more_frames_than_umem_in_batches_larger_than_the_rings(netns):
    out = run_in(netns, '''
        N_FRAMES, TOTAL = 256, 3000                     # rings of 128; 3000 frames each way
        frames = [frame(i, 60 + (i * 53) % 1454) for i in range(TOTAL)]
        pool = PacketPool(1024)
        port = XdpPort("va", n_frames=N_FRAMES)
        peer = peer_socket()

        got = []
        for k in range(0, TOTAL, 100):                  # < 128 in flight, read in batches of 200
            for f in frames[k:k + 100]:
                peer.send(f)
            got += receive_all(port, pool, 100, 200)
            assert len(got) == k + 100, (len(got), port.stats())   # fail fast if frames stop coming
        assert got == frames

        sent, deadline = 0, time.time() + 20
        for k in range(0, TOTAL, 1000):                 # batches of 300 > ring and > TX frames
            part = pool.store(frames[k:k + 1000])
            done = 0
            while done < len(part) and time.time() < deadline:
                n = port.send(pool, part[done:done + 300])
                done += n
                if n == 0:
                    time.sleep(0.001)
            sent += done
            pool.free(part)
        assert sent == TOTAL
        assert peer_receive(peer, TOTAL) == frames

        deadline = time.time() + 5
        while port.frames_accounted() != N_FRAMES and time.time() < deadline:
            port.reclaim()
            time.sleep(0.01)
        assert port.frames_accounted() == N_FRAMES, port.frames_accounted()
        assert pool.n_free[0] == pool.n_slots
        st = port.stats()
        assert st["rx_dropped"] == st["rx_invalid_descs"] == st["tx_invalid_descs"] == 0, st
        port.close()
        print("ok", len(got), sent)
    ''')
    assert out == "ok 3000 3000"


def test_open_xdp_falls_back_with_a_log_line(caplog):
    from lwaftr.io.afxdp import open_xdp

    with caplog.at_level(logging.WARNING, logger="lwaftr.io"):
        assert open_xdp("lwaftr-nonexistent0") is None
    lines = [r.getMessage() for r in caplog.records if r.name == "lwaftr.io"]
    assert len(lines) == 1 and "lwaftr-nonexistent0" in lines[0] and "AF_PACKET" in lines[0], lines


def test_generic_fallback_and_reopen_after_a_killed_owner(netns):
    sh("ip", "-n", netns, "link", "add", "br0", "type", "bridge")
    sh("ip", "-n", netns, "link", "set", "br0", "up")
    out = run_in(netns, '''
        import os, signal, sys
        port = XdpPort("br0")                           # a bridge has no native XDP: generic (skb) mode
        mode = port.mode
        port.close()
        child = subprocess.Popen([sys.executable, "-c", "from lwaftr.io.afxdp import XdpPort; import time; "
                                  "p = XdpPort('va'); print('up', flush=True); time.sleep(60)"],
                                 stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "up"
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        port = XdpPort("va")                            # the dead socket's queue is released late: retried
        pool = PacketPool(64)
        peer = peer_socket()
        peer.send(frame(1, 60))
        assert receive_all(port, pool, 1, 8) == [frame(1, 60)]
        port.close()
        print(mode, port.mode)
    ''')
    assert out == "generic native"


def test_umem_is_the_pool_frames_processed_and_sent_where_received(netns):
    """With the pool as UMEM: a frame is received into a slot (after the kernel's
    256 bytes of headroom), grows in front in place, and leaves from that very
    slot on another interface whose socket registered the same pool; every slot
    comes back; copy mode (veth has no zero-copy) is logged."""
    sh("ip", "-n", netns, "link", "add", "vc", "type", "veth", "peer", "name", "vd")
    for dev in ("vc", "vd"):
        sh("ip", "netns", "exec", netns, "sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=1")
        sh("ip", "-n", netns, "link", "set", dev, "up")
    out = run_in(netns, '''
        import logging, sys
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
        pool = PacketPool(1024)
        a = XdpPort("va", pool=pool, ring_size=256)
        c = XdpPort("vc", pool=pool, ring_size=256)
        assert a.owns_sent and c.owns_sent and not a.zerocopy
        assert pool.n_free[0] == 1024 - 512                 # both fill rings full, a quarter kept back
        peer_in = peer_socket()
        peer_out = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x86dd))
        peer_out.bind(("vd", 0x86dd))
        peer_out.setsockopt(socket.SOL_SOCKET, 33, 1 << 25)
        frames = [frame(i, 60 + (i * 41) % 1400) for i in range(600)]
        head = bytes([2, 0, 0, 0, 0, 3, 2, 0, 0, 0, 0, 4]) + b"\\x86\\xdd" + bytes(40)
        got, sent, offered, deadline = [], 0, 0, time.time() + 30
        while len(got) < len(frames) and time.time() < deadline:
            if len(got) == offered:             # 100 at a time: fewer than the fill ring and veth's ring hold
                for f in frames[offered:offered + 100]:
                    peer_in.send(f)
                offered = min(len(frames), offered + 100)
            select.select([a], [], [], 0.2)
            slots, _ = a.receive(pool, 64)
            for s in slots:
                o, n = int(pool.off[s]), int(pool.length[s])
                assert o == 256, o                           # where the kernel wrote it: no copy
                got.append(pool.buf[s, o:o + n].tobytes())
                # "Encapsulate" in the headroom: 54 bytes in front, the frame where it is.
                pool.off[s] = o - 40
                pool.buf[s, o - 40:o + 14] = np.frombuffer(head, np.uint8)
                pool.length[s] = n + 40
            sent += c.send(pool, slots)
        assert got == frames, (len(got), a.stats())
        assert sent == len(frames), c.stats()
        peer_out.settimeout(5)
        seen = []
        while len(seen) < len(frames):
            data, addr = peer_out.recvfrom(65535)
            if addr[2] != socket.PACKET_OUTGOING:
                seen.append(data)
        assert seen == [head + f[14:] for f in frames]
        deadline = time.time() + 5
        while pool.n_free[0] + a.frames_accounted() + c.frames_accounted() != 1024 and time.time() < deadline:
            c.reclaim()
            time.sleep(0.01)
        assert pool.n_free[0] + a.frames_accounted() + c.frames_accounted() == 1024   # no slot leaked
        st = a.stats(), c.stats()
        assert all(s["rx_dropped"] == s["tx_invalid_descs"] == s["tx_ring_full"] == 0 for s in st), st
        a.close()
        c.close()
        print("ok", len(got), len(seen))
    ''')
    assert out.splitlines()[-1] == "ok 600 600", out
    assert "AF_XDP on va queue 0: copy mode (native XDP" in out and "AF_XDP on vc queue 0: copy mode" in out, out
