"""The live forwarding loop: AF_PACKET rings in, the engine, rings out.

One instance, one process: receive a batch from each ring, run it through
:class:`~lwaftr.dataplane.engine.Engine`, transmit what comes out, repeat;
block in ``select`` only when both rings are idle.  Configuration reloads
(SIGHUP) build the new engine state aside and swap it in between batches;
a configuration that fails to load is refused and the running one stays.
"""
from __future__ import annotations

import logging
import select
import time
from dataclasses import dataclass, field

import numpy as np

from lwaftr import counters as C
from lwaftr import wire as W
from lwaftr.config.errors import ConfigError
from lwaftr.config.load import load_config
from lwaftr.dataplane.engine import Engine
from lwaftr.dataplane.checksum import complete_flagged
from lwaftr.io.afpacket import TP_STATUS_CSUMNOTREADY, RxRing, TxRing

log = logging.getLogger("lwaftr.live")


@dataclass
class Port:
    """One interface: its receive and transmit rings."""
    name: str
    rx: RxRing = field(init=False)
    tx: TxRing = field(init=False)

    def __post_init__(self) -> None:
        self.rx = RxRing(self.name)
        self.tx = TxRing(self.name)

    def close(self) -> None:
        self.rx.close()
        self.tx.close()


def _ethertypes(pool, slots: np.ndarray) -> np.ndarray:
    o = pool.off[slots].astype(np.int64) + W.O_ETH_TYPE
    return (pool.buf[slots, o].astype(np.int64) << 8) | pool.buf[slots, o + 1]


class LiveLoop:
    """Forward between interfaces until :meth:`stop` is called."""

    def __init__(self, conf_path: str, v4: str | None, v6: str | None, stick: str | None,
                 batch: int = 256) -> None:
        self.conf_path = conf_path
        self.engine = Engine(load_config(conf_path), max_batch=batch)
        self.batch = batch
        self.running = True
        self.reload_requested = False
        if stick:
            self.p4 = self.p6 = Port(stick)
        else:
            self.p4, self.p6 = Port(v4), Port(v6)
        self.stick = stick is not None
        self.tx_refused = 0
        self.csum_completed = 0     # frames whose offloaded checksum we finished (veth, local stacks)

    def stop(self) -> None:
        self.running = False

    def request_reload(self) -> None:
        self.reload_requested = True

    def reload(self) -> bool:
        """Load the configuration again; swap it in only if it loads and validates."""
        self.reload_requested = False
        try:
            cfg = load_config(self.conf_path)
            new = Engine(cfg, max_batch=self.batch)
        except (ConfigError, OSError, ValueError) as e:
            log.error("reload refused, keeping the running configuration: %s", e)
            return False
        new.counters[:] = self.engine.counters        # counters carry on across reloads
        self.engine = new
        log.info("configuration reloaded: %d softwires", len(cfg.bindings))
        return True

    def _split(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """On a stick: IPv4 and ARP to the IPv4 side, the rest to the IPv6 side."""
        if len(slots) == 0:
            return slots, slots
        et = _ethertypes(self.engine.pool, slots)
        v4 = (et == W.ETHERTYPE_IPV4) | (et == W.ETHERTYPE_ARP)
        return slots[v4], slots[~v4]

    def run_once(self, now: float) -> int:
        """One batch each way; returns the number of frames received."""
        eng = self.engine
        pool = eng.pool
        s4, f4 = self.p4.rx.receive(pool, self.batch)
        self.csum_completed += complete_flagged(pool.buf, pool.off, pool.length, s4, f4, TP_STATUS_CSUMNOTREADY)
        if self.stick:
            s4, s6 = self._split(s4)
        else:
            s6, f6 = self.p6.rx.receive(pool, self.batch)
            self.csum_completed += complete_flagged(pool.buf, pool.off, pool.length, s6, f6,
                                                    TP_STATUS_CSUMNOTREADY)
        n = len(s4) + len(s6)
        o4, o6 = eng.process(s4, s6, now)
        sent = self.p4.tx.send(pool, o4) + self.p6.tx.send(pool, o6)
        self.tx_refused += len(o4) + len(o6) - sent
        pool.free(o4)
        pool.free(o6)
        return n

    def run(self) -> None:
        rings = [self.p4.rx] if self.stick else [self.p4.rx, self.p6.rx]
        while self.running:
            if self.reload_requested:
                self.reload()
            if self.run_once(time.monotonic()) == 0:
                select.select(rings, [], [], 0.05)      # idle: sleep until a ring has frames

    def counters(self) -> dict[str, int]:
        return C.to_dict(self.engine.counters, nonzero=True)

    def close(self) -> None:
        self.p4.close()
        if not self.stick:
            self.p6.close()
