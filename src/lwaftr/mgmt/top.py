"""A live view of an instance's counters: rates per second and totals.

The arithmetic (:func:`rates`, :func:`rows`) is pure: two sets of totals and
the seconds between them in, sorted rows out.  :func:`render_plain` and
:func:`render_screen` turn rows into text; :func:`watch` reads the instance
(``lwaftr.mgmt.snapshot``) every interval and prints, in place with ANSI
escapes on a terminal, or as plain snapshots for scripts.
"""
from __future__ import annotations

import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TextIO

from lwaftr import counters as C
from lwaftr.mgmt import snapshot

# Traffic first, in this order (ports in, ports out, hairpin) ...
TRAFFIC: tuple[str, ...] = C.names(
    C.IN_IPV4_PACKETS, C.IN_IPV4_BYTES, C.OUT_IPV4_PACKETS, C.OUT_IPV4_BYTES,
    C.IN_IPV6_PACKETS, C.IN_IPV6_BYTES, C.OUT_IPV6_PACKETS, C.OUT_IPV6_BYTES,
    C.HAIRPIN_IPV4_PACKETS, C.HAIRPIN_IPV4_BYTES,
)
# ... then everything else that is not a drop (ARP, NDP, ICMP, fragments, the kernel's share) ...
# ... then drops, the per-interface sums first.
DROP_SUMS: tuple[str, ...] = C.names(
    C.DROP_ALL_IPV4_IFACE_PACKETS, C.DROP_ALL_IPV4_IFACE_BYTES,
    C.DROP_ALL_IPV6_IFACE_PACKETS, C.DROP_ALL_IPV6_IFACE_BYTES,
)
GROUP_TRAFFIC, GROUP_OTHER, GROUP_DROPS = 0, 1, 2
_FIXED = {n: i for i, n in enumerate(TRAFFIC + DROP_SUMS)}


@dataclass(frozen=True)
class Row:
    name: str
    total: int
    rate: float | None      #: per second over the last interval; None before there is one


def group(name: str) -> int:
    """Which block a counter is shown in: traffic, other, drops."""
    if name in TRAFFIC:
        return GROUP_TRAFFIC
    if name.startswith("drop-") or name.endswith("-drops"):
        return GROUP_DROPS
    return GROUP_OTHER


def rates(prev: Mapping[str, int], cur: Mapping[str, int], seconds: float) -> dict[str, float]:
    """Per-second rate of every counter of ``cur`` since ``prev``, ``seconds`` earlier.

    A counter missing from ``prev`` counts from 0; one that went down (the
    instance restarted) counts from 0 too, as Prometheus' ``rate()`` does.
    """
    if seconds <= 0:
        raise ValueError(f"the interval must be positive, not {seconds}")
    out = {}
    for name, value in cur.items():
        before = prev.get(name, 0)
        delta = value - before if value >= before else value
        out[name] = delta / seconds
    return out


def _sort_key(row: Row) -> tuple:
    g = group(row.name)
    return (g, _FIXED.get(row.name, len(_FIXED)), -(row.rate or 0.0), -row.total, row.name)


def rows(totals: Mapping[str, int], per_second: Mapping[str, float] | None = None,
         *, show_all: bool = False) -> list[Row]:
    """Rows to show: counters that are non-zero (or moved), traffic first, then
    the rest, then drops; inside a block the fixed order of :data:`TRAFFIC` and
    :data:`DROP_SUMS`, then the fastest-moving and biggest first."""
    out = []
    for name, total in totals.items():
        rate = per_second.get(name) if per_second is not None else None
        if total or rate or show_all:
            out.append(Row(name, int(total), rate))
    out.sort(key=_sort_key)
    return out


def human(x: float, *, integer: bool = False) -> str:
    """12, 12.3k, 4.56M, 7.89G ... (``integer``: no decimals below 1000)."""
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            v = x / scale
            return f"{v:.3g}{unit}" if v < 1000 else f"{v:,.0f}{unit}"
    return f"{x:.0f}" if integer or x == int(x) else f"{x:.1f}"


def _uptime(started: float | None, now: float) -> str:
    if started is None:
        return "?"
    s = max(0, int(now - started))
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return (f"{d}d " if d else "") + f"{h:02d}:{m:02d}:{s:02d}"


def _stamp(now: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))


def render_plain(snap: snapshot.Snapshot, table: list[Row], seconds: float | None,
                 now: float | None = None) -> str:
    """One snapshot for scripts: a ``#`` header, then ``NAME RATE TOTAL`` lines
    (rate per second with two decimals, or ``-`` before the first interval),
    then an empty line."""
    now = time.time() if now is None else now
    interval = f"{seconds:.3f}s" if seconds is not None else "-"
    lines = [f"# lwaftr top: instance={snap.name} pid={snap.pid} workers={len(snap.workers)} "
             f"interval={interval} at={_stamp(now)}",
             f"# {'counter':<46} {'rate/s':>16} {'total':>20}"]
    width = max([48] + [len(r.name) for r in table])
    for r in table:
        rate = "-" if r.rate is None else f"{r.rate:.2f}"
        lines.append(f"{r.name:<{width}} {rate:>16} {r.total:>20}")
    if not table:
        lines.append("# every counter is zero")
    return "\n".join(lines) + "\n\n"


def render_screen(snap: snapshot.Snapshot, table: list[Row], seconds: float | None,
                  width: int = 80, height: int = 24, now: float | None = None) -> list[str]:
    """The lines of one screen (no escapes), cut to ``width`` x ``height``."""
    now = time.time() if now is None else now
    every = f"{seconds:.1f}s" if seconds is not None else "…"
    namew = max([7] + [len(r.name) for r in table])
    if namew + 34 > width:                  # narrow terminal: shorten names, keep the numbers
        namew = max(16, width - 34)

    def cut(s: str) -> str:
        return s if len(s) <= namew else s[:namew - 1] + "…"

    lines = [f"lwaftr top  {snap.name}  pid {snap.pid}  workers {len(snap.workers)}  "
             f"up {_uptime(snap.started, now)}  interval {every}  {time.strftime('%H:%M:%S')}",
             "",
             f"{'COUNTER':<{namew}}  {'RATE/S':>10}  {'TOTAL':>20}"]
    last = None
    for r in table:
        g = group(r.name)
        if last is not None and g != last:
            lines.append("")
        last = g
        rate = "" if r.rate is None else human(r.rate)
        lines.append(f"{cut(r.name):<{namew}}  {rate:>10}  {r.total:>20,}")
    if not table:
        lines.append("(every counter is zero)")
    if len(lines) > height - 1:
        hidden = len(lines) - (height - 2)
        lines = lines[:height - 2] + [f"… {hidden} more lines (a bigger terminal shows them)"]
    return [ln[:width] for ln in lines]


def _screen_frame(lines: list[str], reverse_line: int = 2) -> str:
    out = ["\x1b[H"]
    for i, ln in enumerate(lines):
        out.append(("\x1b[7m" + ln + "\x1b[0m" if i == reverse_line else ln) + "\x1b[K\n")
    out.append("\x1b[J")
    return "".join(out)


class Gone(LookupError):
    """The instance stopped."""


def watch(name: str, interval: float = 1.0, iterations: int | None = None, *, plain: bool = False,
          show_all: bool = False, out: TextIO | None = None,
          clock: Callable[[], float] = time.monotonic,
          sleep: Callable[[float], None] = time.sleep) -> int:
    """Show instance ``name`` every ``interval`` seconds, ``iterations`` times
    (forever if None).  Raises LookupError if it is not running at the start;
    returns 1 if it stops meanwhile, 0 otherwise (also on Ctrl-C or SIGTERM)."""
    out = out or sys.stdout
    if interval <= 0:
        raise ValueError("--interval must be positive")
    prev = snapshot.read(name)
    prev_t = clock()
    screen = not plain
    old_term = None
    if screen:
        if threading.current_thread() is threading.main_thread():
            old_term = signal.signal(signal.SIGTERM, signal.default_int_handler)
        out.write("\x1b[?25l\x1b[2J")
        size = shutil.get_terminal_size()
        out.write(_screen_frame(render_screen(prev, rows(prev.totals(), None, show_all=show_all),
                                              None, size.columns, size.lines)))
        out.flush()
    deadline = prev_t
    done = 0
    try:
        while iterations is None or done < iterations:
            deadline += interval
            now = clock()
            if deadline < now - interval:      # fell far behind (suspended): start afresh
                deadline = now
            sleep(max(0.0, deadline - now))
            try:
                cur = snapshot.read(name)
                cur_t = clock()
            except LookupError as e:
                raise Gone(str(e)) from None
            except (OSError, ValueError):      # restarting under the same name: next time
                continue
            restarted = (cur.pid, cur.started) != (prev.pid, prev.started)
            seconds = cur_t - prev_t
            per_second = rates({} if restarted else prev.totals(), cur.totals(), seconds)
            table = rows(cur.totals(), per_second, show_all=show_all)
            if screen:
                size = shutil.get_terminal_size()
                out.write(_screen_frame(render_screen(cur, table, seconds, size.columns, size.lines)))
            else:
                out.write(render_plain(cur, table, seconds))
            out.flush()
            prev, prev_t = cur, cur_t
            done += 1
    except KeyboardInterrupt:
        pass
    except Gone as e:
        if screen:
            out.write("\x1b[?25h")
            screen = False
        print(f"lwaftr top: {e}", file=sys.stderr)
        return 1
    finally:
        if screen:
            out.write("\x1b[?25h")
            out.flush()
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
    return 0
