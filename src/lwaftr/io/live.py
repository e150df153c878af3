"""The live forwarding loop: interfaces in, the engine, interfaces out.

One instance, one process: receive a batch from each port (AF_PACKET rings,
or AF_XDP where asked for and possible), run it through
:class:`~lwaftr.dataplane.engine.Engine`, transmit what comes out, repeat;
block in ``select`` only when everything is idle.

With the kernel as control plane (the default; see
:mod:`lwaftr.dataplane.control`), each side has a TAP carrying the instance's
addresses: frames the engine leaves to the kernel are written to it, what the
kernel writes is sent out of the data interface, and next-hop MACs come from
the kernel's neighbour table (:mod:`lwaftr.io.neighbors`).

Reloads (SIGHUP, ``lwaftr reload``) load the configuration aside and swap it
in between batches: a new binding table alone is swapped under the running
engine (every other state kept); other changes build a new engine.  A
configuration that does not load, or that changes what needs a restart
(interfaces, addresses, control-plane mode), is refused with a log line and
the running one stays.  Counters live in shared memory (:mod:`lwaftr.io.state`).

Changes made through the control socket are durable: the instance starts and
reloads from the file with its journal replayed (:mod:`lwaftr.mgmt.persist`),
and, run alone, appends each change to the journal (fsynced) before it answers;
under a supervisor the supervisor writes the journal, and the worker hands it
each change's record.
"""
from __future__ import annotations

import ipaddress
import logging
import os
import select
import socket
import struct
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
from pyroute2 import IPRoute

from lwaftr import counters as C
from lwaftr import wire as W
from lwaftr.config.errors import ConfigError
from lwaftr.config.journal import Flusher, Journal, open_journal
from lwaftr.config.model import KERNEL, Bindings, Config
from lwaftr.dataplane.checksum import complete_flagged
from lwaftr.dataplane.engine import Engine, slot_size
from lwaftr.dataplane.pool import PacketPool
from lwaftr.io.afpacket import SOL_PACKET, TP_STATUS_CSUMNOTREADY, RxRing, TxRing, fanout_group
from lwaftr.io.control import ControlServer
from lwaftr.io.interfaces import InterfaceError, check_tap_name
from lwaftr.io.neighbors import NextHops
from lwaftr.io.pcap import CaptureError, PcapWriter
from lwaftr.io.state import StateDir
from lwaftr.io.tap import QuietInterface, Tap, configure_tap, tap_name
from lwaftr.mgmt.alarms import Alarms
from lwaftr.mgmt.persist import Compactor, load_persisted
from lwaftr.mgmt.service import ConfigService, warm_up

log = logging.getLogger("lwaftr.live")

PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
#: How often the next hops are looked at for netlink events (the table itself:
#: every ``next-hop-cache-refresh-interval``).
NEIGHBOUR_POLL = 0.05
#: Frames taken from a TAP per loop iteration (control traffic is light).
TAP_BURST = 64
#: Configuration files bigger than this are compiled in a child process on reload.
BIG_CONFIG = 1 << 20
#: How often the control socket is looked at while forwarding.
CONTROL_POLL = 0.001
#: AF_XDP ring sizes with the UMEM as the packet pool (fill ring: frames posted to receive into).
XDP_RING = 4096
#: Packet-pool slots with AF_XDP: two ports' fill rings, their frames in flight and the batches.
XDP_POOL_SLOTS = 32768
#: How often the rings' own figures (the kernel's drops, refusals) go into the counters.
PORT_STATS_POLL = 0.1


class MonitorSink:
    """Where a monitored subscriber's frames go: a pcap file, or a TAP for tcpdump."""

    def __init__(self, pcap: str | None = None, tap: str | None = None) -> None:
        if (pcap is None) == (tap is None):
            raise ValueError("give a pcap file or a TAP name")
        self.tap: Tap | None = None
        self.writer: PcapWriter | None = None
        if tap is not None:
            check_tap_name(tap, "--tap")
            self.tap = Tap(tap)
            with IPRoute() as ipr:
                ipr.link("set", index=ipr.link_lookup(ifname=tap)[0], state="up")
            self.what = f"TAP {tap}"
        else:
            self.writer = PcapWriter(pcap)
            self.what = f"pcap file {pcap}"

    def __str__(self) -> str:
        return self.what

    def write(self, frames: list[bytes]) -> None:
        if not frames:
            return
        if self.tap is not None:
            self.tap.write(frames)
        else:
            now = time.time()
            for f in frames:
                self.writer.write(f, now)
            self.writer.flush()

    def close(self) -> None:
        if self.tap is not None:
            self.tap.close()
        if self.writer is not None:
            self.writer.close()


class Port:
    """One data interface: AF_XDP if asked for and possible, else AF_PACKET rings.

    With ``queues`` > 1 this port is one of the several workers serving the
    interface, on RX queue ``queue``: with AF_XDP the socket of that queue,
    with AF_PACKET a member of the interface's fanout group (flow hash)."""

    def __init__(self, name: str, io: str = "afpacket", queue: int = 0, queues: int = 1,
                 pool: PacketPool | None = None) -> None:
        """``pool``: the engine's packet pool, which AF_XDP takes as its UMEM
        (no copy in user space) when its slots are UMEM-sized."""
        self.name = name
        self.xdp = None
        if io == "xdp":
            from lwaftr.io.afxdp import open_xdp
            if pool is not None and pool.slot_size in (2048, 4096):
                self.xdp = open_xdp(name, queue, queues=queues, pool=pool, ring_size=XDP_RING)
            else:
                # Own UMEM of 16k frames: 8k to receive into, so a scheduling hiccup does not
                # empty the fill ring (4k dropped a few % in a measurement here).
                self.xdp = open_xdp(name, queue, queues=queues, n_frames=16384)   # None (and a log line) if not possible
        # Frames for the instance MAC, which need not be the interface's own: promiscuous
        # for as long as this socket lives (it receives nothing itself when XDP is used).
        self._promisc = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        mreq = struct.pack("iHH8s", socket.if_nametoindex(name), PACKET_MR_PROMISC, 0, b"")
        self._promisc.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
        if self.xdp is not None:
            self.kind = "af_xdp"
            return
        self.kind = "af_packet"
        self.rx = RxRing(name, fanout=fanout_group(name) if queues > 1 else None)
        self.tx = TxRing(name)

    def _totals(self) -> dict[int, int]:
        """What the rings dropped, refused or delayed since they were opened, by counter."""
        if self.xdp is not None:
            st = self.xdp.stats()
            return {C.DROP_RX_RING_FULL_PACKETS: st["rx_dropped"] + st["rx_ring_full"],
                    C.DROP_RX_TOO_BIG_PACKETS: st["rx_too_big"],
                    C.DROP_TX_FULL_PACKETS: st["tx_ring_full"],
                    C.DROP_TX_TOO_BIG_PACKETS: st["tx_too_big"],
                    C.DROP_TX_INVALID_PACKETS: st["tx_invalid_descs"]}
        return {C.DROP_RX_RING_FULL_PACKETS: self.rx.stats()["drops"],
                C.DROP_RX_TOO_BIG_PACKETS: self.rx.too_big,
                C.DROP_TX_FULL_PACKETS: self.tx.ring_full,
                C.DROP_TX_TOO_BIG_PACKETS: self.tx.too_big,
                C.TX_KICK_DEFERRED: self.tx.kicks_deferred}

    def account(self, counters: np.ndarray) -> None:
        """Add to ``counters`` what the rings dropped, refused or delayed since the last call."""
        now = self._totals()
        last = getattr(self, "_last", {})
        for idx, v in now.items():
            d = v - last.get(idx, 0)
            if d:
                counters[idx] += d
        self._last = now

    @property
    def kick_pending(self) -> bool:
        return self.xdp is None and self.tx.kick_pending

    def fileno(self) -> int:
        return self.xdp.fileno() if self.xdp is not None else self.rx.fileno()

    def receive(self, pool, max_frames: int) -> tuple[np.ndarray, np.ndarray]:
        return (self.xdp or self.rx).receive(pool, max_frames)

    def transmit(self, pool: PacketPool, slots: np.ndarray) -> int:
        """Send the slots' frames and give the slots up (to the pool at once, or,
        with the UMEM as pool, once the kernel has sent them); returns how many
        were queued (the refused ones are counted by the port: :meth:`account`)."""
        if self.xdp is not None and self.xdp.owns_sent:
            return self.xdp.send(pool, slots)
        n = (self.xdp or self.tx).send(pool, slots)
        pool.free(slots)
        return n

    def close(self) -> None:
        if self.xdp is not None:
            self.xdp.close()
        else:
            self.rx.close()
            self.tx.close()
        self._promisc.close()


def _restart_part(cfg: Config) -> tuple:
    """What a reload may not change."""
    return cfg.instances, cfg.control_plane


def _without_bindings(cfg: Config) -> Config:
    return replace(cfg, bindings=Bindings.empty())


class LiveLoop:
    """Forward between interfaces until :meth:`stop` is called."""

    def __init__(self, conf_path: str, v4: str | None, v6: str | None, stick: str | None, *,
                 batch: int = 512, io: str = "afpacket", control_plane: str | None = None,
                 name: str | None = None, instance: int = 0, worker: str | None = None) -> None:
        """``instance``: which of the configuration's instances this loop serves
        (its addresses, MACs and next hops); ``worker``: its id under a
        supervisor (state in ``NAME/workers/ID``)."""
        self.conf_path = conf_path
        self._preparing: subprocess.Popen | None = None     # a big reload being compiled
        self.monitor_sink: MonitorSink | None = None
        self.instance_index = instance
        self.config, table, self.seq = load_persisted(conf_path)   # seq: the last journal record it holds
        self._narrow(self.config)           # ConfigError now if there is no such instance
        self.mode = control_plane or self.config.control_plane.mode
        self.kernel = self.mode == KERNEL
        self.batch = batch
        self.io = io
        self.running = True
        self.reload_requested = False
        self.stick = stick is not None
        self.name = name or self.config.name or "lwaftr"
        self.queue, self.queues = self._queue(worker is not None)
        self._closers: list = []
        try:
            # The journal (its writer's lock) and the compiled lookups first: the
            # state directory, and then the control socket, follow closely.
            self.journal: Journal | None = None         # under a supervisor, the supervisor writes it
            self.compactor: Compactor | None = None
            self.supervised = worker is not None
            if worker is None:
                jr = open_journal(conf_path, log)
                if isinstance(jr, Journal):         # (else: a read-only directory, changes in memory)
                    self.journal = jr
                    self._closers.append(self.journal.close)
                    self.flusher = Flusher(self.journal, self._not_written)
                    self._closers.append(self.flusher.wait)
                    self.compactor = Compactor(conf_path, self.journal)
                    self._closers.append(self.compactor.stop)
            warm_up(table)
            self.state = StateDir(self.name, worker)
            self._closers.append(lambda: self.state.close(keep_counters=worker is not None))
            self.engine = self._engine(self.config, table)
            self.service = ConfigService(self.config, table, counters=self.state.counters)
            self._unsynced: list[tuple[dict, dict | None]] = []     # replies of changes not yet fsynced
            self.control = ControlServer(self.state.path / "control.sock", self._control,
                                         flush=self._flush if self.journal is not None else None)
            self._closers.append(self.control.close)
            self.ipr = IPRoute()
            self._closers.append(self.ipr.close)
            devices = [stick] if stick else [v4, v6]
            if self.queue == min(self.queues):      # one worker of the interface's set quietens it
                for dev in devices:
                    q = QuietInterface(self.ipr, dev)
                    self._closers.append(q.restore)
            qa = (self.queue if len(self.queues) > 1 else 0, len(self.queues), self.engine.pool)
            if stick:
                self.p4 = self.p6 = Port(stick, io, *qa)
                self._closers.append(self.p4.close)
            else:
                self.p4 = Port(v4, io, *qa)
                self._closers.append(self.p4.close)
                self.p6 = Port(v6, io, *qa)
                self._closers.append(self.p6.close)
            self.taps: dict[int, Tap] = {}
            self.next_hops: NextHops | None = None
            if self.kernel:
                self._setup_kernel_side(v4, v6, stick)
        except BaseException:
            self.close()
            raise
        self.csum_completed = 0     # frames whose offloaded checksum we finished (veth, local stacks)
        self._warm_up_rings()
        self._nh_next = 0.0
        self._control_next = 0.0
        self._stats_next = 0.0
        self.alarms = Alarms(self.state.counters)
        self.state.write_alarms({})             # none raised yet (a restarted worker's are gone)
        self._alarms_next = time.monotonic() + 1.0
        log.info("instance %s%s%s: %s control plane, %s", self.name, "" if worker is None else f" worker {worker}",
                 "" if len(self.queues) == 1 else f" queue {self.queue} of {len(self.queues)}", self.mode,
                 ", ".join(f"{p.name} ({p.kind})" for p in {id(p): p for p in (self.p4, self.p6)}.values()),
                 extra={"fields": {"softwires": self.engine.table.count, "state": str(self.state.path)}})

    def _warm_up_rings(self) -> None:
        """Compile (or load from numba's cache) the ring and checksum kernels now, with
        nothing to move, so that they do not compile on the first frames after
        "forwarding" is said (seconds on a cold cache, while frames wait)."""
        pool = self.engine.pool
        none = np.zeros(0, np.int32)
        for p in self._ports():
            slots, flags = p.receive(pool, 0)
            complete_flagged(pool.buf, pool.off, pool.length, slots, flags, TP_STATUS_CSUMNOTREADY)
            p.transmit(pool, none)

    def _queue(self, supervised: bool) -> tuple[int, tuple[int, ...]]:
        """This worker's receive queue and the queues of all the workers of its
        device(s): the configuration's ``queue`` entries of the instance, a
        worker each under the supervisor.  Alone (interfaces given) it serves
        every queue: queue 0 of one."""
        inst = self.config.instances[self.instance_index]
        if not supervised:
            return 0, (0,)
        group = [i for i in self.config.instances
                 if (i.device, i.external_device) == (inst.device, inst.external_device)]
        if self.kernel and any((i.external, i.internal) != (inst.external, inst.internal) for i in group):
            raise ConfigError(f"instance {inst.device!r}: its queues have different addresses, but the kernel "
                              f"control plane gives the device one TAP (one set of addresses) for all its "
                              f"queues", file=self.conf_path)
        return inst.queue_id, tuple(sorted(i.queue_id for i in group))

    def _narrow(self, cfg: Config) -> Config:
        """``cfg`` as this loop's engine sees it: with its one instance."""
        if self.instance_index >= len(cfg.instances):
            raise ConfigError(f"no instance {self.instance_index} (the configuration has "
                              f"{len(cfg.instances)})", file=self.conf_path)
        return replace(cfg, instances=[cfg.instances[self.instance_index]])

    def _engine(self, cfg: Config, table) -> Engine:
        """An engine for ``cfg``; a rebuilt one keeps the packet pool (the ports' UMEM)."""
        old = getattr(self, "engine", None)
        return Engine(self._narrow(cfg), table=table, max_batch=self.batch, kernel=self.kernel,
                      counters=self.state.counters, pool=old.pool if old is not None else None,
                      pool_slots=XDP_POOL_SLOTS if self.io == "xdp" and slot_size(cfg) <= 4096 else 4096)

    # -- the kernel side ---------------------------------------------------------------------
    def _setup_kernel_side(self, v4: str | None, v6: str | None, stick: str | None) -> None:
        cfg = self.config
        inst = cfg.instances[self.instance_index]
        cp = cfg.control_plane
        names = {4: tap_name(stick, 4), 6: tap_name(stick, 6)} if stick else {4: tap_name(v4), 6: tap_name(v6)}
        brs = [bytes(r) for r in self.engine.table.br_tab if r.any()]
        hops: list[tuple[int, bytes]] = []
        self._hop_sides: list[int] = []
        for side, addr, policy, plen, extra in (
                (4, inst.external, cfg.external, cp.external_prefix_length, []),
                (6, inst.internal, cfg.internal, cp.internal_prefix_length,
                 [(b, 128) for b in brs if b != inst.internal.ip])):
            tap = Tap(names[side], multi_queue=len(self.queues) > 1)
            self.taps[side] = tap
            self._closers.append(tap.close)
            idx = configure_tap(self.ipr, tap.name, addr.mac, policy.mtu, [(addr.ip, plen)] + extra,
                                addr.next_hop.ip, ipv6=side == 6)
            if addr.next_hop.ip is not None:
                hops.append((idx, addr.next_hop.ip))
                self._hop_sides.append(side)
        self._static = {4: inst.external.next_hop.mac, 6: inst.internal.next_hop.mac}
        if hops:
            self.next_hops = NextHops(self.ipr, hops, cp.next_hop_refresh_interval, manage=True)
            self._closers.append(self.next_hops.close)
        self._apply_next_hops()
        log.info("kernel control plane: TAP %s for %s", ", ".join(t.name for t in self.taps.values()),
                 "both sides" if stick else "each side")

    def _apply_next_hops(self) -> None:
        macs = dict(self._static)
        if self.next_hops is not None:
            for side, mac in zip(self._hop_sides, self.next_hops.macs()):
                macs[side] = mac
        self.engine.set_next_hops(macs[4], macs[6])

    def _poll_next_hops(self, now: float) -> None:
        if self.next_hops is not None and now >= self._nh_next:
            self._nh_next = now + NEIGHBOUR_POLL
            if self.next_hops.poll(now):
                self._apply_next_hops()

    def _kernel_io(self, s4: np.ndarray, s6: np.ndarray) -> None:
        """The batch's frames for the TAPs (slots, freed here) to them; what the kernel sent, out."""
        eng, pool = self.engine, self.engine.pool
        k4, k6 = pool.frames(s4), pool.frames(s6)
        pool.free(s4)
        pool.free(s6)
        refused = (self.taps[4].write(k4) if k4 else 0) + (self.taps[6].write(k6) if k6 else 0)
        if refused:
            eng.counters[C.DROP_TO_KERNEL_PACKETS] += refused
        for side, port in ((4, self.p4), (6, self.p6)):
            frames = self.taps[side].read(TAP_BURST)
            if frames:
                slots = eng.from_kernel(frames, side)
                port.transmit(pool, slots)      # what it refuses is counted by the port (_account_ports)

    # -- control -----------------------------------------------------------------------------
    def stop(self) -> None:
        self.running = False

    def request_reload(self) -> None:
        self.reload_requested = True

    def _start_reload(self) -> None:
        """Reload now for a small file; a big one (a large binding table) is
        compiled by a child process first, and :meth:`run` swaps it in when
        that is done, so forwarding never waits for it."""
        self.reload_requested = False
        if self._preparing is not None:
            self.reload_requested = True            # after the one under way
            return
        try:
            big = os.path.getsize(self.conf_path) > BIG_CONFIG
        except OSError:
            big = False
        if not big:
            self.reload()
            return
        log.info("reload: compiling %s in a child process", self.conf_path)
        self._preparing = subprocess.Popen([sys.executable, "-m", "lwaftr.config.load", self.conf_path],
                                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def _reload_ready(self) -> None:
        p = self._preparing
        if p is None or p.poll() is None:
            return
        self._preparing = None
        err = p.stderr.read().strip() if p.stderr else ""
        if p.returncode != 0:
            log.error("reload refused, keeping the running configuration: %s", err or f"exit {p.returncode}")
            return
        self.reload()

    def reload(self) -> bool:
        """Load the configuration file and its journal again; swap them in only if
        they load, validate and change nothing that needs a restart."""
        self.reload_requested = False
        try:
            cfg, table, seq = load_persisted(self.conf_path)
            self._apply(cfg, table)
        except (ConfigError, OSError, ValueError) as e:
            log.error("reload refused, keeping the running configuration: %s", e)
            return False
        self.seq = seq
        log.info("configuration reloaded", extra={"fields": {"softwires": table.count}})
        return True

    def _apply(self, cfg: Config, table) -> None:
        """Swap in ``cfg`` with ``table`` (ConfigError, changing nothing, if it needs a restart)."""
        if _restart_part(cfg) != _restart_part(self.config):
            raise ConfigError("changes to instances, interfaces, addresses or the control plane "
                              "need a restart", file=self.conf_path)
        if _without_bindings(cfg) == _without_bindings(self.config):
            self.engine.set_table(table)                # every other state (reassembly, ...) kept
        else:
            try:
                new = self._engine(cfg, table)
            except ValueError as e:                     # the MTUs outgrew the running packet pool
                raise ConfigError(str(e), file=self.conf_path) from None
            new.set_next_hops(*self.engine.next_hop_macs())     # (built-in: what it learned)
            self.engine.release()                       # fragments it holds: back to the shared pool
            self.engine = new
        self.config = cfg
        self.service.adopt(cfg, table)

    def _control(self, req: dict) -> dict:
        """A control-socket request, between batches."""
        if req.get("op") == "monitor":
            return self._monitor(req)
        op = req.get("op")
        if op == "ping":
            return {"ok": True, "pid": os.getpid(), "seq": self.seq}
        if op == "reload":                  # from the supervisor, in order with the changes
            return {"ok": True, "seq": self.seq} if self.reload() else \
                {"ok": False, "error": "reload refused (see the log)"}
        if op == "compact" and self.compactor is not None:
            self.compactor.start()
            return {"ok": True, "through": self.compactor.through}
        if op == "replay" and not self.supervised:
            return {"ok": False, "error": "replay is for a supervisor's workers"}
        r = self.service.handle(req)
        if r.table_changed:
            self.engine.set_table(self.service.table)   # arrays may have grown; BR addresses may be new
        if r.config is not None:
            try:
                self._apply(r.config, r.table if r.table is not None else self.engine.table)
            except ConfigError as e:
                return {"ok": False, "error": str(e)}
            log.info("configuration changed through the control socket: %s %s", op, req.get("path", ""))
        if not r.reply.get("ok"):
            return r.reply
        if op == "replay" and isinstance(req.get("seq"), int):
            self.seq = req["seq"]
        if r.record is None or (self.journal is None and not self.supervised):
            return r.reply                  # (no journal: a read-only directory, logged at start)
        if self.supervised:                 # the supervisor journals it, and may take it back
            if isinstance(req.get("seq"), int):
                self.seq = req["seq"]
            return dict(r.reply, record=r.record, undo=r.undo)
        try:
            self.seq = self.journal.append(r.record, sync=False)
        except OSError as e:
            log.error("cannot write the journal %s: %s; change taken back", self.journal.path, e)
            if r.undo is not None:
                self._take_back(r.undo)
            return {"ok": False, "error": f"cannot write the journal {self.journal.path}: {e}"}
        reply = dict(r.reply)
        self._unsynced.append((reply, r.undo))
        return reply

    def _flush(self):
        """Before the replies go out: the changes since the last call are fsynced by a
        helper thread while forwarding goes on; the control server holds their
        replies until it is done (see :class:`lwaftr.config.journal.Flusher`)."""
        if not self._unsynced:
            return None
        items, self._unsynced = self._unsynced, []
        return self.flusher.flush(items)

    def _not_written(self, items: list[tuple[dict, dict | None]], e: OSError) -> None:
        """The journal could not be fsynced: those changes are taken back, newest first,
        and their replies become refusals."""
        log.error("cannot write the journal %s: %s; %d changes taken back", self.journal.path, e, len(items))
        for reply, undo in items:
            if undo is not None:
                self._take_back(undo)
            reply.clear()
            reply.update({"ok": False, "error": f"cannot write the journal {self.journal.path}: {e}"})
        self.seq = self.journal.seq

    def _take_back(self, undo: dict) -> None:
        r = self.service.handle({"op": "replay", "records": [undo]})
        if r.table_changed:
            self.engine.set_table(self.service.table)
        if r.config is not None:
            self._apply(r.config, self.engine.table)

    def _monitor(self, req: dict) -> dict:
        """Start (``ipv4`` and ``pcap`` or ``tap``) or stop (``ipv4`` null) mirroring a subscriber."""
        self._stop_monitor()
        ip = req.get("ipv4")
        if not ip:
            return {"ok": True}
        try:
            addr = int(ipaddress.IPv4Address(ip))
            self.monitor_sink = MonitorSink(pcap=req.get("pcap"), tap=req.get("tap"))
        except (ValueError, OSError, CaptureError, InterfaceError) as e:
            return {"ok": False, "error": str(e)}
        self.engine.set_monitor(addr)
        log.info("monitoring %s to %s", ip, self.monitor_sink)
        return {"ok": True, "target": str(self.monitor_sink)}

    def _stop_monitor(self) -> None:
        self.engine.set_monitor(None)
        if self.monitor_sink is not None:
            log.info("monitoring stopped (%s)", self.monitor_sink)
            self.monitor_sink.close()
            self.monitor_sink = None

    # -- forwarding --------------------------------------------------------------------------
    def run_once(self, now: float) -> int:
        """One batch each way; returns the number of frames received (data and TAPs)."""
        eng = self.engine
        pool = eng.pool
        s4, f4 = self.p4.receive(pool, self.batch)
        self.csum_completed += complete_flagged(pool.buf, pool.off, pool.length, s4, f4, TP_STATUS_CSUMNOTREADY)
        if self.stick:
            s4, s6 = eng.split_stick_slots(s4)
        else:
            s6, f6 = self.p6.receive(pool, self.batch)
            self.csum_completed += complete_flagged(pool.buf, pool.off, pool.length, s6, f6,
                                                    TP_STATUS_CSUMNOTREADY)
        n = len(s4) + len(s6)
        out = eng.process(s4, s6, now)
        sent = self.p4.transmit(pool, out.v4) + self.p6.transmit(pool, out.v6)
        if sent < len(out.v4) + len(out.v6) or now >= self._stats_next:
            self._account_ports(now)
        if self.kernel:
            self._poll_next_hops(now)
            self._kernel_io(out.kernel4, out.kernel6)
        if self.monitor_sink is not None and out.mirrored:
            self.monitor_sink.write(out.mirrored)
        if now >= self._control_next:
            self._control_next = now + CONTROL_POLL
            n += self.control.poll()
            if self.compactor is not None and not self.flusher.busy():
                self.compactor.poll()           # (never while an fsync of the journal is under way)
        if now >= self._alarms_next:
            self._alarms_next = now + 1.0
            self._check_alarms(now)
        return n

    def _check_alarms(self, now: float) -> None:
        inst = self.config.instances[self.instance_index]
        unresolved = [str(ipaddress.ip_address(hop.ip)) if hop.ip else side
                      for side, hop, mac in zip(("IPv4 side", "IPv6 side"),
                                                (inst.external.next_hop, inst.internal.next_hop),
                                                self.engine.next_hop_macs())
                      if mac is None]
        events = self.alarms.check(now, unresolved)
        for e in events:
            (log.warning if e.raised else log.info)("alarm %s: %s", "raised" if e.raised else "cleared", e.text,
                                                   extra={"fields": {"alarm": e.alarm}})
        if events:
            self.state.write_alarms(self.alarms.raised())

    def _ports(self) -> list[Port]:
        return [self.p4] if self.stick else [self.p4, self.p6]

    def _account_ports(self, now: float) -> None:
        """The rings' drops, refusals and deferred kicks into the counters (at once
        when a batch was refused, else every PORT_STATS_POLL)."""
        self._stats_next = now + PORT_STATS_POLL
        for p in self._ports():
            p.account(self.engine.counters)

    def _waitables(self) -> list:
        out = [self.p4] if self.stick else [self.p4, self.p6]
        out += list(self.taps.values())
        if self.next_hops is not None:
            out.append(self.next_hops)
        out.append(self.control)
        return out

    def run(self) -> None:
        waitables = self._waitables()
        while self.running:
            if self.reload_requested:
                self._start_reload()
            if self._preparing is not None:
                self._reload_ready()
            if self.run_once(time.monotonic()) == 0:
                # Idle: sleep until something has frames (or a request comes); not at
                # all while a refused transmit kick leaves frames waiting in a ring.
                wait = 0.0 if any(p.kick_pending for p in self._ports()) else \
                    0.0005 if self.control.busy else 0.05           # (replies waiting for an fsync)
                select.select(waitables + list(self.control.clients), [], [], wait)
                self._control_next = 0.0
        self._account_ports(time.monotonic())

    def counters(self) -> dict[str, int]:
        return C.to_dict(self.engine.counters, nonzero=True)

    def close(self) -> None:
        """Release everything in reverse order of acquisition (restores the interfaces).
        A supervised worker's counters stay for its next start."""
        if self.monitor_sink is not None:
            self.monitor_sink.close()
            self.monitor_sink = None
        if self._preparing is not None:
            self._preparing.kill()
            self._preparing.wait()
            self._preparing = None
        while self._closers:
            f = self._closers.pop()
            try:
                f()
            except Exception as e:          # keep closing the rest
                log.debug("close: %s", e)
