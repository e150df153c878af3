"""Prometheus metrics of the running instances, read from shared memory.

A custom collector: every scrape lists the instances under
``$LWAFTR_RUN_DIR`` and maps their counters (``lwaftr.mgmt.snapshot``), so
instances that start or stop between scrapes appear or disappear, and the
data plane does nothing for it.  Families:

``lwaftr_<counter>_total{instance, worker}``
    every counter of ``lwaftr.counters`` (``-`` becomes ``_``), one series per
    worker (today one worker per instance, ``worker="0"``); sum over
    ``worker`` for the instance.
``lwaftr_instance_up{instance}``
    1 while the instance runs and its counters are readable; 0 for an
    instance named with ``--name`` that is not running, one whose state
    cannot be read (starting, stopping) or one whose process died without
    removing its state directory.
``lwaftr_instance_start_time_seconds{instance}``
    when it started (Unix time).
"""
from __future__ import annotations

import logging
import re
import signal
import sys
import threading
from collections.abc import Iterable, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from lwaftr import counters as C
from lwaftr.mgmt import snapshot

log = logging.getLogger("lwaftr.metrics")

PREFIX = "lwaftr_"
DEFAULT_LISTEN = "127.0.0.1:9417"
_HELP = dict(C.COUNTERS)


def metric_name(counter: str) -> str:
    """``in-ipv4-packets`` -> ``lwaftr_in_ipv4_packets`` (``_total`` is added on exposition)."""
    return PREFIX + re.sub(r"[^a-zA-Z0-9_]", "_", counter)


def _counter_family(counter: str) -> CounterMetricFamily:
    return CounterMetricFamily(metric_name(counter), _HELP.get(counter, f"lwaftr counter {counter}."),
                               labels=("instance", "worker"))


def _up_family() -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + "instance_up",
                             "1 if the lwaftr instance is running and its counters are readable.",
                             labels=("instance",))


def _start_family() -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + "instance_start_time_seconds",
                             "Start time of the lwaftr instance since the Unix epoch, in seconds.",
                             labels=("instance",))


class LwaftrCollector(Collector):
    """Collects the counters of every running instance (or of ``names`` only)."""

    def __init__(self, names: Sequence[str] | None = None) -> None:
        self.names = tuple(dict.fromkeys(names)) if names else None

    def describe(self) -> Iterable[Metric]:
        # Names for the registry's duplicate check and ?name[]= filtering; no samples.
        yield _up_family()
        yield _start_family()
        for n in C.NAMES:
            yield _counter_family(n)

    def _targets(self) -> list[tuple[str, bool]]:
        if self.names is not None:
            return [(n, True) for n in self.names]
        return [(name, is_alive) for name, _pid, is_alive in snapshot.listing()]

    def collect(self) -> Iterable[Metric]:
        up, start = _up_family(), _start_family()
        families: dict[str, CounterMetricFamily] = {}
        for name, is_alive in self._targets():
            snap = None
            if is_alive:
                try:
                    snap = snapshot.read(name)
                except LookupError:
                    pass
                except (OSError, ValueError, TypeError) as e:
                    log.debug("cannot read instance %s: %s", name, e)
            up.add_metric([name], 1.0 if snap else 0.0)
            if snap is None:
                continue
            if snap.started is not None:
                start.add_metric([name], float(snap.started))
            for worker, values in snap.workers.items():
                for counter, value in values.items():
                    fam = families.get(counter)
                    if fam is None:
                        fam = families[counter] = _counter_family(counter)
                    fam.add_metric([name, worker], float(value))
        yield up
        yield start
        order = {n: i for i, n in enumerate(C.NAMES)}
        for counter in sorted(families, key=lambda n: (order.get(n, len(order)), n)):
            yield families[counter]


def registry(names: Sequence[str] | None = None) -> CollectorRegistry:
    """A registry holding only the lwaftr collector."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(LwaftrCollector(names))
    return reg


def parse_listen(spec: str) -> tuple[str, int]:
    """``ADDR:PORT``, ``[V6ADDR]:PORT`` or ``:PORT`` (all IPv4 addresses) -> (addr, port)."""
    host, sep, port = spec.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"--listen wants ADDR:PORT, not {spec!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host or "0.0.0.0", int(port)


def serve(listen: str = DEFAULT_LISTEN, names: Sequence[str] | None = None,
          stop: threading.Event | None = None) -> int:
    """Serve ``/metrics`` on ``listen`` until SIGTERM/SIGINT (or ``stop`` is set)."""
    from prometheus_client import start_http_server

    addr, port = parse_listen(listen)
    stop = stop or threading.Event()
    in_main = threading.current_thread() is threading.main_thread()
    if in_main:
        old = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        server, thread = start_http_server(port, addr, registry(names))
        host, bound = server.server_address[:2]
        shown = f"[{host}]" if ":" in host else host
        log.info("serving metrics on http://%s:%d/metrics", shown, bound,
                 extra={"fields": {"listen": f"{shown}:{bound}"}})
        sys.stderr.flush()
        try:
            while not stop.wait(1.0):   # short waits: signal handlers run in between
                pass
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
        log.info("stopped")
    finally:
        if in_main:
            for s, h in old.items():
                signal.signal(s, h)
    return 0
