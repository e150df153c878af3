"""Which core each worker runs on.

A worker is pinned to one core before it allocates anything, so that its
packet pool, rings and UMEM are first touched, hence placed, on that core's
NUMA node.  The cores come from the configuration (``lwaftr { cpu N; ... }``,
RFC 8676 ``lwaftr-softwire-ext:cpu``: one per worker, in the order of the
instances and their queues) or, by default, from the NUMA node of each
worker's interface (``/sys/class/net/IF/device/numa_node``; an interface
without one, such as a veth, belongs to every node).  Only cores this process
may run on are used, and never two workers on one core: a worker left
without a core of its own runs unpinned (logged).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger("lwaftr.placement")

SYS = Path("/sys")


class PlacementError(ValueError):
    """A configured core list that cannot be honoured."""


def parse_cpulist(text: str) -> list[int]:
    """``0-3,8,10-11`` (the kernel's cpulist format) -> [0, 1, 2, 3, 8, 10, 11]."""
    out: list[int] = []
    for part in text.strip().split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        out += range(int(lo), int(hi or lo) + 1)
    return out


def numa_node(ifname: str, sys: Path = SYS) -> int:
    """The NUMA node of ``ifname``'s device, or -1 (none: a virtual interface, one node)."""
    try:
        return int((sys / "class/net" / ifname / "device/numa_node").read_text())
    except (OSError, ValueError):
        return -1


def node_cpus(node: int, sys: Path = SYS) -> list[int]:
    """The cores of NUMA node ``node`` (every online core for -1 or an unknown node)."""
    for path in ([sys / f"devices/system/node/node{node}/cpulist"] if node >= 0 else []) + \
            [sys / "devices/system/cpu/online"]:
        try:
            return parse_cpulist(path.read_text())
        except (OSError, ValueError):
            continue
    return sorted(os.sched_getaffinity(0))


def assign(devices: list[str], configured: tuple[int, ...] = (), *, allowed: set[int] | None = None,
           sys: Path = SYS) -> list[int | None]:
    """A core for each worker (``devices[i]``: the interface worker ``i`` receives on), or None.

    ``configured``: cores given in the configuration, one per worker in order
    (PlacementError if one repeats or may not be used here; workers beyond the
    list are placed by default).  By default, each worker takes the first free
    core of its interface's NUMA node, then of any node."""
    allowed = set(os.sched_getaffinity(0)) if allowed is None else allowed
    seen: set[int] = set()
    for i, c in enumerate(configured):
        if c in seen:
            raise PlacementError(f"cpu {c} is given twice (workers {configured.index(c)} and {i}): "
                                 f"one worker per core")
        if c not in allowed:
            raise PlacementError(f"cpu {c} (worker {i}) is not one this process may run on "
                                 f"({','.join(map(str, sorted(allowed)))})")
        seen.add(c)
    out: list[int | None] = list(configured[:len(devices)])
    used = set(out)
    for i in range(len(out), len(devices)):
        local = [c for c in node_cpus(numa_node(devices[i], sys), sys) if c in allowed and c not in used]
        anywhere = [c for c in sorted(allowed) if c not in used]
        cpu = (local or anywhere or [None])[0]
        if cpu is None:
            log.warning("worker %d (%s): no core left of its own (%d cores for %d workers): it runs unpinned",
                        i, devices[i], len(allowed), len(devices))
        elif not local:
            log.warning("worker %d (%s): no free core on its NUMA node %d: pinned to core %d of another node",
                        i, devices[i], numa_node(devices[i], sys), cpu)
        out.append(cpu)
        used.add(cpu)
    return out


def pin(cpu: int) -> None:
    """Run this process on core ``cpu`` only (before it allocates its packet memory)."""
    os.sched_setaffinity(0, {cpu})
