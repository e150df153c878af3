"""AF_PACKET rings on a veth pair in a network namespace the test creates (needs root)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

NS = f"lwaftr-afp-{os.getpid()}"


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


@pytest.fixture
def netns():
    sh("ip", "netns", "add", NS)
    try:
        sh("ip", "-n", NS, "link", "add", "va", "type", "veth", "peer", "name", "vb")
        for dev in ("va", "vb"):
            sh("ip", "netns", "exec", NS, "sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=1")
            sh("ip", "-n", NS, "link", "set", dev, "up")
        yield NS
    finally:
        sh("ip", "netns", "del", NS)


BODY = textwrap.dedent('''
    import select, socket, time
    import numpy as np
    from lwaftr.dataplane.pool import PacketPool
    from lwaftr.io.afpacket import RxRing, TxRing

    ETHERTYPE = b"\\x88\\xb5"          # IEEE local experimental: nothing else answers it
    def frame(i, size):
        return bytes([2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2]) + ETHERTYPE + i.to_bytes(4, "big") + bytes(size - 18)
    frames = [frame(i, 60 + (i * 37) % 1400) for i in range(300)]
    pool = PacketPool(1024)
    pool.free_list[:] = np.random.default_rng(7).permutation(pool.free_list)   # as drops leave it
    rx, tx = RxRing("va"), TxRing("va")
    peer = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x88b5))
    peer.bind(("vb", 0x88b5))
    peer.setsockopt(socket.SOL_SOCKET, 33, 1 << 24)   # SO_RCVBUFFORCE: hold all 300 frames

    # Receive: frames sent into vb come out of the ring on va, in order, byte for byte,
    # in slots taken in address order from a shuffled pool.
    for f in frames:
        peer.send(f)
    got, deadline = [], time.time() + 10
    while len(got) < len(frames) and time.time() < deadline:
        select.select([rx], [], [], 0.2)
        slots, flags = rx.receive(pool, 64)
        d = np.diff(slots)
        assert (d > 0).all() or (d < 0).all(), slots        # taken in address order
        got += [pool.frame(int(s)) for s in slots]
        pool.free(slots[::-1])
    got = [g for g in got if g[12:14] == ETHERTYPE]
    assert got == frames, (len(got), len(frames))

    # Transmit: slots queued on the TX ring arrive at vb, in order, byte for byte.
    slots = pool.store(frames)
    assert tx.send(pool, slots) == len(frames)
    pool.free(slots)
    peer.settimeout(5)
    seen = []
    while len(seen) < len(frames):
        data, addr = peer.recvfrom(65535)
        if addr[2] != socket.PACKET_OUTGOING:
            seen.append(data)
    assert seen == frames
    assert pool.n_free[0] == pool.n_slots
    print("ok", len(got), len(seen))
''')


def test_rx_and_tx_rings_move_frames_exactly(netns):
    r = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", BODY],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip() == "ok 300 300"


STATS_BODY = textwrap.dedent('''
    import socket, time
    from lwaftr.dataplane.pool import PacketPool
    from lwaftr.io.afpacket import RxRing

    pool = PacketPool(1024)
    rx = RxRing("va", block_size=4096, block_nr=2)    # room for a few dozen small frames
    peer = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x88b5))
    peer.bind(("vb", 0x88b5))
    frame = bytes([2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2]) + b"\\x88\\xb5" + bytes(100)
    for _ in range(300):                                # nobody reads: the ring fills, the rest is dropped
        peer.send(frame)
    time.sleep(0.05)                                    # past the block timeout: every block is handed over
    got = 0
    while True:
        slots, _ = rx.receive(pool, 64)
        if len(slots) == 0:
            break
        got += len(slots)
        pool.free(slots)
    st = rx.stats()
    assert st["drops"] > 0 and st["packets"] == got + st["drops"] >= 300, (got, st)
    assert rx.stats() == st                              # cumulative: a second read loses nothing
    print("ok")
''')


def test_rx_ring_stats_count_what_a_full_ring_drops(netns):
    r = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", STATS_BODY],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip() == "ok"


STALL_BODY = textwrap.dedent('''
    import socket, time
    from lwaftr.dataplane.pool import PacketPool
    from lwaftr.io.afpacket import RxRing

    pool = PacketPool(1024)
    rx = RxRing("va")
    peer = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x88b5))
    peer.bind(("vb", 0x88b5))
    frame = bytes([2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2]) + b"\\x88\\xb5" + bytes(100)
    for _ in range(80):             # a slow trickle (one frame a millisecond) while the reader is away
        peer.send(frame)
        time.sleep(0.001)
    time.sleep(0.01)
    got = 0
    while True:
        slots, _ = rx.receive(pool, 64)
        if len(slots) == 0:
            break
        got += len(slots)
        pool.free(slots)
    print(got, rx.stats()["drops"])
''')


def test_rx_ring_rides_out_a_stall_of_the_reader_at_a_low_rate(netns):
    """Blocks are handed over by timeout when traffic is slow: the default ring
    must still hold ~80 ms of it (16 one-millisecond blocks held 16)."""
    r = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", STALL_BODY],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.split() == ["80", "0"], r.stdout


WEDGE_BODY = textwrap.dedent('''
    import socket, time
    import numpy as np
    from lwaftr import counters as C
    from lwaftr.dataplane.pool import PacketPool
    from lwaftr.io.afpacket import RxRing, TxRing
    from lwaftr.io.live import Port

    def frame(i, size):
        return bytes([2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2]) + b"\\x88\\xb5" + i.to_bytes(4, "big") + bytes(size - 18)
    pool = PacketPool(1024)
    port = Port("va")                                   # MTU 1500: at most 1514 bytes leave untagged
    peer = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x88b5))
    peer.bind(("vb", 0x88b5))
    peer.settimeout(2)
    counters = C.new_array()

    def through(frames):
        slots = pool.store(frames)
        n = port.transmit(pool, slots)                  # the slots are given up
        assert pool.n_free[0] == pool.n_slots
        port.account(counters)
        return n
    # A frame the kernel would refuse (EMSGSIZE) between two good ones, then more.
    assert through([frame(0, 100), frame(1, 1515), frame(2, 1514)]) == 2
    assert through([frame(3, 100)]) == 1
    seen = []
    while len(seen) < 3:
        data, addr = peer.recvfrom(65535)
        if addr[2] != socket.PACKET_OUTGOING:
            seen.append(int.from_bytes(data[14:18], "big"))
    assert seen == [0, 2, 3], seen
    assert counters[C.DROP_TX_TOO_BIG_PACKETS] == 1 and counters[C.DROP_TX_FULL_PACKETS] == 0

    # The kernel's receive-ring drops reach the counters (a small ring nobody reads).
    port.rx.close()
    port.rx = RxRing("va", block_size=4096, block_nr=2)
    port._last = {}
    for i in range(300):
        peer.send(frame(i, 100))
    time.sleep(0.05)
    got = 0
    while True:
        slots, _ = port.receive(pool, 64)
        if len(slots) == 0:
            break
        got += len(slots)
        pool.free(slots)
    port.account(counters)
    drops = int(counters[C.DROP_RX_RING_FULL_PACKETS])
    assert drops > 0 and got + drops >= 300, (got, drops)
    port.account(counters)
    assert counters[C.DROP_RX_RING_FULL_PACKETS] == drops         # deltas: counted once
    print("ok")
''')


def test_an_oversized_frame_is_refused_and_counted_and_does_not_wedge_the_tx_ring(netns):
    """The kernel marks a TX-ring frame longer than MTU + 18 bytes WRONG_FORMAT and, by
    default, sends nothing after it ever again: such frames are refused before the ring
    (drop-tx-too-big-packets) and the frames after them leave.  Ring drops are counted."""
    r = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", WEDGE_BODY],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip() == "ok"
