"""``lwaftr run``: forward live traffic between Linux interfaces.

    lwaftr run --conf FILE (--v4 IFACE --v6 IFACE | --on-a-stick IFACE)   one instance, one process
               [--cpu N]
    lwaftr run --conf FILE [--instance V4,V6 | --instance IFACE]...       a worker per instance and queue
               [--name NAME] [--io afpacket|xdp] [--control-plane kernel|built-in]
               [--snmp-agentx SOCKET]                                     supervised: SNMP subagent

Frames move through AF_PACKET rings (TPACKET_V3 in, TX ring out; or AF_XDP
with ``--io xdp`` where the kernel allows it) and the same engine as
``check`` and ``bench``.  With the kernel as control plane (the default),
a TAP per data interface carries the router's own addresses and the kernel
answers ARP, NDP and ping and resolves the next hops.  SIGHUP (or
``lwaftr reload NAME``) reloads the configuration (refused, with a log line,
if it does not load: the running one stays); ``lwaftr counters NAME`` reads
the counters while it runs; SIGTERM and SIGINT stop cleanly and print them.

Without interface options, every instance of the configuration runs in a
worker process of its own, supervised (see :mod:`lwaftr.io.supervisor`), a
worker per ``queue`` entry (on that receive queue: ``docs/deployment.md``),
each pinned to a core (:mod:`lwaftr.io.placement`):
instance ``device D; external-device E;`` uses E (IPv4) and D (IPv6),
an instance without ``external-device`` runs on a stick on D.
``--instance`` gives the interfaces of the configuration's instances in
order instead (``V4IF,V6IF`` or one interface for a stick).
"""
from __future__ import annotations

import argparse
import json
import logging
import signal
import sys

from lwaftr.cli import LOG_FORMAT_HELP, LOG_LEVEL_HELP, examples
from lwaftr import logs
from lwaftr.config.errors import ConfigError
from lwaftr.config.model import BUILT_IN, KERNEL
from lwaftr.io.interfaces import InterfaceError, PrivilegeError, check_run


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="forward live traffic between Linux interfaces",
                       description="Needs CAP_NET_ADMIN and CAP_NET_RAW, and existing, up Ethernet "
                                   "interfaces: otherwise it says which and exits 2 before touching anything.",
                       **examples("lwaftr run --conf lwaftr.conf --v4 eth0 --v6 eth1",
                                  "lwaftr run --conf lwaftr.conf --on-a-stick eth0 --name edge1",
                                  "lwaftr run --conf lwaftr.conf          # the devices the configuration names",
                                  "lwaftr run --conf lwaftr.conf --instance eth0,eth1 --instance eth2 --io xdp"))
    p.add_argument("--conf", required=True, help="configuration file")
    p.add_argument("--v4", metavar="IFACE", help="Internet-facing interface")
    p.add_argument("--v6", metavar="IFACE", help="B4-facing interface")
    p.add_argument("--on-a-stick", metavar="IFACE", help="one interface for both sides")
    p.add_argument("--instance", action="append", metavar="V4,V6|IFACE",
                   help="interfaces of the configuration's next instance (repeat; one worker each)")
    p.add_argument("--name", help="instance name for 'lwaftr counters' and 'lwaftr reload' "
                                  "(default: the configuration's name, else 'lwaftr')")
    p.add_argument("--io", choices=["afpacket", "xdp"], default="afpacket",
                   help="xdp: AF_XDP where the kernel allows it, else AF_PACKET (logged)")
    p.add_argument("--control-plane", choices=[KERNEL, BUILT_IN],
                   help="override the configuration's control-plane mode")
    p.add_argument("--batch", type=int, default=512, metavar="N", help="frames per ring per batch (default 512)")
    p.add_argument("--snmp-agentx", metavar="SOCKET",
                   help="supervised: serve LWAFTR-MIB and the data interfaces' IF-MIB counters to snmpd, "
                        "an AgentX subagent of its master socket (a path, or tcp:HOST:PORT)")
    p.add_argument("--cpu", type=int, metavar="N",
                   help="run on core N only, pinned before the packet memory is allocated (with interface "
                        "options; the supervisor gives each worker its core: docs/deployment.md)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"], help=LOG_LEVEL_HELP)
    p.add_argument("--log-format", default="text", choices=["text", "json", "syslog"], help=LOG_FORMAT_HELP)
    p.add_argument("--worker", help=argparse.SUPPRESS)            # set by the supervisor
    p.add_argument("--instance-index", type=int, default=0, help=argparse.SUPPRESS)
    p.set_defaults(func=run)


def _specs(args: argparse.Namespace, instances: list) -> list[list[str]]:
    """Interface arguments of each worker, from --instance or the configuration."""
    if not args.instance:
        return [["--v4", i.external_device, "--v6", i.device] if i.external_device
                else ["--on-a-stick", i.device] for i in instances]
    if len(args.instance) > len(instances):
        raise ConfigError(f"{len(args.instance)} --instance options but the configuration has "
                          f"{len(instances)} instances", file=args.conf)
    specs = []
    for spec in args.instance:
        parts = [x for x in spec.split(",") if x]
        if len(parts) == 2:
            specs.append(["--v4", parts[0], "--v6", parts[1]])
        elif len(parts) == 1:
            specs.append(["--on-a-stick", parts[0]])
        else:
            raise ConfigError(f"--instance {spec!r}: give V4IF,V6IF or one interface")
    return specs


def _named(specs: list[list[str]], from_config: bool) -> list[tuple[str, str]]:
    """(interface, role) of every worker's interfaces, for the checks and their messages."""
    side = {"--v4": "IPv4 side", "--v6": "IPv6 side", "--on-a-stick": "on a stick"}
    where = ", from the configuration" if from_config else ""
    return [(spec[k + 1], f"instance {i}, {side[spec[k]]}{where}")
            for i, spec in enumerate(specs) for k in range(0, len(spec), 2)]


def _placed(specs: list[list[str]], cpus: tuple[int, ...], conf: str) -> list[list[str]]:
    """Each worker's arguments with ``--cpu`` (:mod:`lwaftr.io.placement`) when it gets a core."""
    from lwaftr.io.placement import PlacementError, assign
    receive = [spec[spec.index("--v6") + 1] if "--v6" in spec else spec[1] for spec in specs]
    try:
        cores = assign(receive, cpus)
    except PlacementError as e:
        raise ConfigError(str(e), file=conf, path="lwaftr/cpu") from None
    out = []
    for spec, cpu in zip(specs, cores):
        out.append(spec + ["--cpu", str(cpu)] if cpu is not None else spec)
        logging.getLogger("lwaftr.run").info("worker %d (%s): %s", len(out) - 1, " ".join(spec),
                                             f"core {cpu}" if cpu is not None else "unpinned")
    return out


def _passthrough(args: argparse.Namespace) -> list[str]:
    out = ["--io", args.io, "--batch", str(args.batch), "--log-level", args.log_level,
           "--log-format", args.log_format]
    if args.control_plane:
        out += ["--control-plane", args.control_plane]
    return out


def run(args: argparse.Namespace) -> int:
    logs.setup(args.log_level, args.log_format)
    single = args.on_a_stick or args.v4 or args.v6
    if single and (bool(args.on_a_stick) == bool(args.v4 or args.v6) or (not args.on_a_stick and not (args.v4 and args.v6))
                   or args.instance):
        print("lwaftr run: give --v4 and --v6, or --on-a-stick, or --instance (or nothing: "
              "the configuration's instances)", file=sys.stderr)
        return 2
    from lwaftr.config.journal import JournalBusy
    from lwaftr.io.state import InstanceBusy
    if not single:
        return _supervise(args)
    try:
        check_run([(args.on_a_stick, "--on-a-stick")] if args.on_a_stick
                  else [(args.v4, "--v4"), (args.v6, "--v6")])
    except (InterfaceError, PrivilegeError) as e:
        print(f"lwaftr run: {e}", file=sys.stderr)
        return 2
    from lwaftr.io.live import LiveLoop

    if args.cpu is not None:            # before the pool, rings and UMEM are allocated: on the core's node
        from lwaftr.io.placement import pin
        pin(args.cpu)
    pending = _hold_signals()           # the pid file appears while the loop is built: a reload then must wait
    try:
        loop = LiveLoop(args.conf, args.v4, args.v6, args.on_a_stick, batch=args.batch, io=args.io,
                        control_plane=args.control_plane, name=args.name, instance=args.instance_index,
                        worker=args.worker)
    except ConfigError as e:
        print(f"lwaftr run: {e}", file=sys.stderr)
        return 2
    except (InstanceBusy, JournalBusy) as e:
        print(f"lwaftr run: {e}", file=sys.stderr)
        return 1
    except (OSError, IndexError) as e:
        print(f"lwaftr run: cannot set up the interfaces: {e}", file=sys.stderr)
        return 1
    if args.snmp_agentx and args.worker is None:
        logging.getLogger("lwaftr.run").warning("--snmp-agentx: the SNMP subagent runs only under the supervisor "
                                                "(lwaftr run --conf F without interface options)")
    if (loop.config.bgp.enable or loop.config.ospf.enable) and args.worker is None:
        logging.getLogger("lwaftr.run").warning("bgp/ospf: BIRD runs only under the supervisor (lwaftr run --conf F "
                                                "without interface options); this process announces nothing")
    _handle_signals(pending, loop.request_reload, loop.stop)
    logging.getLogger("lwaftr.run").info("forwarding (%s)", f"on a stick: {args.on_a_stick}" if args.on_a_stick
                                         else f"v4 {args.v4}, v6 {args.v6}")
    try:
        loop.run()
    finally:
        counters = loop.counters()
        loop.close()
    print(json.dumps(counters, indent=1, sort_keys=True))
    return 0


def _hold_signals() -> list[int]:
    """Until :func:`_handle_signals`, SIGHUP, SIGTERM and SIGINT are only noted:
    the instance's pid file is written while it is being built, and a reload
    or stop sent then must neither kill it (SIGHUP's default) nor be lost."""
    pending: list[int] = []
    for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda n, _frame: pending.append(n))
    return pending


def _handle_signals(pending: list[int], reload, stop) -> None:
    """The real handlers, then what arrived while the instance was being built."""
    signal.signal(signal.SIGHUP, lambda *_: reload())
    signal.signal(signal.SIGTERM, lambda *_: stop())
    signal.signal(signal.SIGINT, lambda *_: stop())
    for sig in pending:
        (reload if sig == signal.SIGHUP else stop)()


def _supervise(args: argparse.Namespace) -> int:
    from lwaftr.config.journal import JournalBusy
    from lwaftr.io.state import InstanceBusy
    from lwaftr.io.supervisor import Supervisor
    from lwaftr.mgmt.persist import load_persisted
    from lwaftr.routing.bird import Bird
    try:
        cfg, table, _ = load_persisted(args.conf)      # the file and its journal: what the workers will serve
        specs = _specs(args, cfg.instances)
        check_run(_named(specs, not args.instance))
        name = args.name or cfg.name or "lwaftr"
        bird = Bird.for_run(args.conf, cfg, table, specs, name, args.control_plane)   # None without bgp, ospf
        snmp = None
        if args.snmp_agentx:
            from lwaftr.mgmt.snmp import Subagent
            snmp = Subagent.for_run(name, specs, args.snmp_agentx)               # (interfaces, not cores)
        specs = _placed(specs, cfg.cpus, args.conf)
        pending = _hold_signals()
        sup = Supervisor(args.conf, specs, name, _passthrough(args), bird=bird, snmp=snmp)
    except (ConfigError, InterfaceError, PrivilegeError) as e:
        print(f"lwaftr run: {e}", file=sys.stderr)
        return 2
    except (InstanceBusy, JournalBusy) as e:
        print(f"lwaftr run: {e}", file=sys.stderr)
        return 1
    _handle_signals(pending, sup.request_reload, sup.stop)
    logging.getLogger("lwaftr.run").info("supervising %d workers", len(specs))
    totals = sup.run()
    print(json.dumps(totals, indent=1, sort_keys=True))
    return 0
