"""SNMP for a supervised instance: an AgentX subagent of net-snmp's snmpd.

``lwaftr run --conf FILE --snmp-agentx SOCKET`` (supervised) runs this
subagent in a thread of the supervisor.  It connects to the master agent
(snmpd with ``master agentx`` and ``agentXSocket SOCKET``: a UNIX socket path,
or ``tcp:HOST:PORT``) and serves, read-only, from the workers' counters
(:mod:`lwaftr.mgmt.snapshot`, nothing asked of the data plane):

* ``LWAFTR-MIB`` (``mibs/LWAFTR-MIB.txt``, generated from
  :data:`lwaftr.counters.COUNTERS` by :func:`mib_text`): every counter summed
  over the workers (``lwaftrCounters``, ``Counter64`` scalars), and per worker
  (``lwaftrWorkerTable``);
* the data interfaces' rows of ``IF-MIB``: ``ifHCInOctets``,
  ``ifHCInUcastPkts``, ``ifHCOutOctets``, ``ifHCOutUcastPkts`` (and their
  32-bit ``ifTable`` forms) are what the data plane received and sent there
  (``in-``/``out-ipv4-*`` on the IPv4 side, ``-ipv6-`` on the IPv6 side, both on
  a stick), since frames read from rings bypass the kernel's counts.  They
  are registered per row (more specific than snmpd's own ``IF-MIB``, and at a
  higher priority), so the other columns still come from snmpd.

An alarm raised by a worker (see :mod:`lwaftr.mgmt.alarms`; the worker keeps
those raised and not cleared in its ``alarms.json``) is sent as an
``lwaftrAlarmRaised`` notification, and as ``lwaftrAlarmCleared`` when the
worker clears it (or restarts): snmpd passes them to its
``trap2sink``/``trapsess`` destinations.  When snmpd
goes away (restart, crash) the subagent reconnects, re-opens its session and
registers again, every ``RECONNECT_FIRST`` seconds doubling up to
``RECONNECT_MAX``.
"""
from __future__ import annotations

import bisect
import json
import logging
import re
import select
import socket
import threading
import time
from dataclasses import dataclass, field

from lwaftr import counters as C
from lwaftr.mgmt import agentx as X
from lwaftr.io import state
from lwaftr.mgmt import snapshot

log = logging.getLogger("lwaftr.snmp")

#: IANA's Private Enterprise Number reserved for documentation (RFC 5612): a
#: placeholder until the project has a PEN of its own; then only this changes.
PEN = 32473
LWAFTR_MIB: X.OID = (1, 3, 6, 1, 4, 1, PEN, 7596)
NOTIFICATIONS = LWAFTR_MIB + (0,)
ALARM_RAISED, ALARM_CLEARED = NOTIFICATIONS + (1,), NOTIFICATIONS + (2,)
OBJECTS = LWAFTR_MIB + (1,)
COUNTERS = OBJECTS + (1,)                  # .i.0: counter i (1-based), summed over the workers
WORKER_ENTRY = OBJECTS + (2, 1)            # .column.row
ALARM_OBJECTS = OBJECTS + (3,)             # .1 name, .2 worker, .3 text (accessible-for-notify)
WORKER_NAME, WORKER_INTERFACES, WORKER_FIRST_COUNTER = 2, 3, 10

IF_ENTRY: X.OID = (1, 3, 6, 1, 2, 1, 2, 2, 1)           # IF-MIB ifEntry
IFX_ENTRY: X.OID = (1, 3, 6, 1, 2, 1, 31, 1, 1, 1)      # IF-MIB ifXEntry
SNMP_TRAP_OID: X.OID = (1, 3, 6, 1, 6, 3, 1, 1, 4, 1, 0)

#: Columns served for a data interface: (entry, column, value type, what).
IF_COLUMNS = ((IF_ENTRY, 10, X.COUNTER32, "in-octets"), (IF_ENTRY, 11, X.COUNTER32, "in-packets"),
              (IF_ENTRY, 16, X.COUNTER32, "out-octets"), (IF_ENTRY, 17, X.COUNTER32, "out-packets"),
              (IFX_ENTRY, 6, X.COUNTER64, "in-octets"), (IFX_ENTRY, 7, X.COUNTER64, "in-packets"),
              (IFX_ENTRY, 10, X.COUNTER64, "out-octets"), (IFX_ENTRY, 11, X.COUNTER64, "out-packets"))
_SIDE = {4: ("ipv4",), 6: ("ipv6",), 0: ("ipv4", "ipv6")}     # 0: on a stick

RECONNECT_FIRST, RECONNECT_MAX = 0.5, 5.0
ALARM_POLL = 1.0          # seconds between looks at the workers' alarms
VIEW_TTL = 0.2            # a view (one read of the counters) answers requests for this long
TIMEOUT = 5               # seconds the master waits for our answers (Open)


# --- the MIB module -------------------------------------------------------------------------------

def descriptor(counter: str, prefix: str = "lwaftr") -> str:
    """``drop-ttl-zero-ipv4-packets`` -> ``lwaftrDropTtlZeroIpv4Packets``."""
    return prefix + "".join(w[:1].upper() + w[1:] for w in re.split(r"[^A-Za-z0-9]+", counter) if w)


def _object(name: str, syntax: str, access: str, description: str, parent: str, sub: int) -> list[str]:
    text = description.replace('"', "'")
    return [f"{name} OBJECT-TYPE", f"    SYNTAX      {syntax}", f"    MAX-ACCESS  {access}",
            "    STATUS      current", f'    DESCRIPTION "{text}"', f"    ::= {{ {parent} {sub} }}", ""]


def mib_text() -> str:
    """The SMIv2 text of LWAFTR-MIB (``mibs/LWAFTR-MIB.txt`` is this, checked by the tests)."""
    counters = [(i + 1, n, d, descriptor(n), descriptor(n, "lwaftrWorker")) for i, (n, d) in enumerate(C.COUNTERS)]
    out = ["LWAFTR-MIB DEFINITIONS ::= BEGIN", "",
           "-- Generated from src/lwaftr/counters.py by lwaftr.mgmt.snmp.mib_text(): do not edit;",
           "-- regenerate with: python -m lwaftr.mgmt.snmp > mibs/LWAFTR-MIB.txt", "",
           "IMPORTS",
           "    MODULE-IDENTITY, OBJECT-TYPE, NOTIFICATION-TYPE, Counter64, Unsigned32, enterprises",
           "        FROM SNMPv2-SMI",
           "    DisplayString",
           "        FROM SNMPv2-TC",
           "    MODULE-COMPLIANCE, OBJECT-GROUP, NOTIFICATION-GROUP",
           "        FROM SNMPv2-CONF;", "",
           "lwaftrMIB MODULE-IDENTITY",
           '    LAST-UPDATED "202612060000Z"',
           '    ORGANIZATION "The lwaftr project"',
           '    CONTACT-INFO "See the project\'s README."',
           '    DESCRIPTION  "The counters and alarms of a Lightweight 4over6 AFTR (RFC 7596):',
           "                 every per-reason counter of lwaftr (the softwire-state leaves of",
           "                 snabb-softwire-v3 and lwaftr's own), summed over the workers of the",
           "                 instance and per worker, and its alarms as notifications.",
           f"                 The enterprise number {PEN} is IANA's number for documentation",
           "                 (RFC 5612), a placeholder for the project's own.\"",
           '    REVISION     "202612060000Z"',
           '    DESCRIPTION  "Initial revision."',
           f"    ::= {{ lwaftrEnterprise {LWAFTR_MIB[-1]} }}", "",
           f"lwaftrEnterprise    OBJECT IDENTIFIER ::= {{ enterprises {PEN} }}  -- placeholder (RFC 5612)",
           "lwaftrNotifications OBJECT IDENTIFIER ::= { lwaftrMIB 0 }",
           "lwaftrObjects       OBJECT IDENTIFIER ::= { lwaftrMIB 1 }",
           "lwaftrConformance   OBJECT IDENTIFIER ::= { lwaftrMIB 2 }",
           "lwaftrCounters      OBJECT IDENTIFIER ::= { lwaftrObjects 1 }",
           "lwaftrAlarmObjects  OBJECT IDENTIFIER ::= { lwaftrObjects 3 }", ""]
    for i, name, desc, scalar, _ in counters:
        out += _object(scalar, "Counter64", "read-only", f"{name}: {desc} Summed over the workers.",
                       "lwaftrCounters", i)
    out += _object("lwaftrWorkerTable", "SEQUENCE OF LwaftrWorkerEntry", "not-accessible",
                   "The counters of each worker of the instance.", "lwaftrObjects", 2)
    out += ["lwaftrWorkerEntry OBJECT-TYPE", "    SYNTAX      LwaftrWorkerEntry", "    MAX-ACCESS  not-accessible",
            "    STATUS      current", '    DESCRIPTION "One worker: its name, interfaces and counters."',
            "    INDEX       { lwaftrWorkerIndex }", "    ::= { lwaftrWorkerTable 1 }", "",
            "LwaftrWorkerEntry ::= SEQUENCE {", "    lwaftrWorkerIndex Unsigned32,",
            "    lwaftrWorkerName DisplayString,", "    lwaftrWorkerInterfaces DisplayString,",
            *(f"    {col} Counter64{',' if i < len(counters) else ''}" for i, _, _, _, col in counters), "}", ""]
    out += _object("lwaftrWorkerIndex", "Unsigned32 (1..65535)", "not-accessible",
                   "The worker's position among the instance's workers, in the order of their names, from 1.",
                   "lwaftrWorkerEntry", 1)
    out += _object("lwaftrWorkerName", "DisplayString", "read-only",
                   "The worker's name (lwaftr's worker id).", "lwaftrWorkerEntry", WORKER_NAME)
    out += _object("lwaftrWorkerInterfaces", "DisplayString", "read-only",
                   "The worker's data interfaces, e.g. 'v4 eth0, v6 eth1' or 'on-a-stick eth0'.",
                   "lwaftrWorkerEntry", WORKER_INTERFACES)
    for i, name, desc, _, col in counters:
        out += _object(col, "Counter64", "read-only", f"{name}: {desc}", "lwaftrWorkerEntry",
                       WORKER_FIRST_COUNTER + i - 1)
    out += _object("lwaftrAlarmName", "DisplayString", "accessible-for-notify",
                   "The alarm's name (next-hop-unresolved, reassembly-limit, ...).", "lwaftrAlarmObjects", 1)
    out += _object("lwaftrAlarmWorker", "DisplayString", "accessible-for-notify",
                   "The worker that raised the alarm.", "lwaftrAlarmObjects", 2)
    out += _object("lwaftrAlarmText", "DisplayString", "accessible-for-notify",
                   "What the alarm means.", "lwaftrAlarmObjects", 3)
    out += ["lwaftrAlarmRaised NOTIFICATION-TYPE",
            "    OBJECTS     { lwaftrAlarmName, lwaftrAlarmWorker, lwaftrAlarmText }",
            "    STATUS      current",
            '    DESCRIPTION "A worker raised an alarm (and counted it in its alarm-* counter):',
            '                 the condition holds now."',
            "    ::= { lwaftrNotifications 1 }", "",
            "lwaftrAlarmCleared NOTIFICATION-TYPE",
            "    OBJECTS     { lwaftrAlarmName, lwaftrAlarmWorker, lwaftrAlarmText }",
            "    STATUS      current",
            '    DESCRIPTION "The worker cleared the alarm (its condition has not held for some',
            "                 seconds) or restarted; lwaftrAlarmText is what it was raised with.\"",
            "    ::= { lwaftrNotifications 2 }", "",
            "lwaftrCompliances OBJECT IDENTIFIER ::= { lwaftrConformance 1 }",
            "lwaftrGroups      OBJECT IDENTIFIER ::= { lwaftrConformance 2 }", "",
            "lwaftrCompliance MODULE-COMPLIANCE", "    STATUS      current",
            '    DESCRIPTION "What an lwaftr instance implements: all of this module."',
            "    MODULE      -- this module",
            "    MANDATORY-GROUPS { lwaftrCounterGroup, lwaftrWorkerGroup, lwaftrAlarmGroup,",
            "                       lwaftrNotificationGroup }",
            "    ::= { lwaftrCompliances 1 }", "",
            "lwaftrCounterGroup OBJECT-GROUP", "    OBJECTS {",
            *(f"        {s}{',' if i < len(counters) else ''}" for i, _, _, s, _ in counters), "    }",
            "    STATUS      current", '    DESCRIPTION "The counters, summed over the workers."',
            "    ::= { lwaftrGroups 1 }", "",
            "lwaftrWorkerGroup OBJECT-GROUP", "    OBJECTS {", "        lwaftrWorkerName,",
            "        lwaftrWorkerInterfaces,",
            *(f"        {c}{',' if i < len(counters) else ''}" for i, _, _, _, c in counters), "    }",
            "    STATUS      current", '    DESCRIPTION "The counters of each worker."',
            "    ::= { lwaftrGroups 2 }", "",
            "lwaftrAlarmGroup OBJECT-GROUP",
            "    OBJECTS     { lwaftrAlarmName, lwaftrAlarmWorker, lwaftrAlarmText }",
            "    STATUS      current", '    DESCRIPTION "What an alarm notification carries."',
            "    ::= { lwaftrGroups 3 }", "",
            "lwaftrNotificationGroup NOTIFICATION-GROUP",
            "    NOTIFICATIONS { lwaftrAlarmRaised, lwaftrAlarmCleared }",
            "    STATUS      current", '    DESCRIPTION "The alarm notifications."',
            "    ::= { lwaftrGroups 4 }", "",
            "END"]
    return "\n".join(out) + "\n"


# --- what is served ---------------------------------------------------------------------------

@dataclass(frozen=True)
class DataInterface:
    """A data interface and what counts for it: (worker id, side) pairs, side 4,
    6, or 0 for an interface on a stick (several workers may share one)."""
    name: str
    members: tuple[tuple[str, int], ...]


def data_interfaces(specs: list[list[str]]) -> list[DataInterface]:
    """The data interfaces of the workers (worker ``i`` runs ``specs[i]``,
    ``--v4 A --v6 B`` or ``--on-a-stick C``)."""
    found: dict[str, list[tuple[str, int]]] = {}
    side = {"--v4": 4, "--v6": 6, "--on-a-stick": 0}
    for i, spec in enumerate(specs):
        for opt, dev in zip(spec[::2], spec[1::2]):
            if opt in side:
                found.setdefault(dev, []).append((str(i), side[opt]))
    return [DataInterface(dev, tuple(m)) for dev, m in found.items()]


def _worker_order(ids) -> list[str]:
    return sorted(ids, key=lambda w: (0, int(w), "") if w.isdigit() else (1, 0, w))


def build_view(snap: snapshot.Snapshot | None, interfaces: dict[int, DataInterface],
               describe: dict[str, str]) -> list[tuple[X.OID, int, object]]:
    """Every (OID, type, value) served, sorted by OID.  ``interfaces``: by
    ifIndex; ``describe``: worker id -> its interfaces, as text."""
    if snap is None:
        return []
    out: list[tuple[X.OID, int, object]] = []
    totals = snap.totals()
    for i, n in enumerate(C.NAMES):
        out.append((COUNTERS + (i + 1, 0), X.COUNTER64, totals.get(n, 0)))
    for row, w in enumerate(_worker_order(snap.workers), 1):
        values = snap.workers[w]
        out.append((WORKER_ENTRY + (WORKER_NAME, row), X.OCTET_STRING, w.encode()))
        out.append((WORKER_ENTRY + (WORKER_INTERFACES, row), X.OCTET_STRING, describe.get(w, "").encode()))
        for i, n in enumerate(C.NAMES):
            out.append((WORKER_ENTRY + (WORKER_FIRST_COUNTER + i, row), X.COUNTER64, values.get(n, 0)))
    for ifindex, dif in interfaces.items():
        sums = dict.fromkeys(("in-octets", "in-packets", "out-octets", "out-packets"), 0)
        for w, side in dif.members:
            values = snap.workers.get(w, {})
            for fam in _SIDE[side]:
                sums["in-octets"] += values.get(f"in-{fam}-bytes", 0)
                sums["in-packets"] += values.get(f"in-{fam}-packets", 0)
                sums["out-octets"] += values.get(f"out-{fam}-bytes", 0)
                sums["out-packets"] += values.get(f"out-{fam}-packets", 0)
        for entry, col, typ, what in IF_COLUMNS:
            out.append((entry + (col, ifindex), typ, sums[what]))
    out.sort(key=lambda r: r[0])
    return out


def answer(view: list[tuple[X.OID, int, object]], pdu: X.Pdu) -> list[X.VarBind]:
    """The varbinds answering a Get, GetNext or GetBulk over ``view``."""
    oids = [r[0] for r in view]

    def get(oid: X.OID) -> X.VarBind:
        k = bisect.bisect_left(oids, oid)
        if k < len(oids) and oids[k] == oid:
            return X.VarBind(oid, view[k][1], view[k][2])
        column = any(0 <= j < len(oids) and oids[j][:-1] == oid[:-1] for j in (k - 1, k))
        return X.VarBind(oid, X.NO_SUCH_INSTANCE if column else X.NO_SUCH_OBJECT)

    def next_(start: X.OID, include: bool, end: X.OID) -> X.VarBind:
        k = (bisect.bisect_left if include else bisect.bisect_right)(oids, start)
        if k < len(oids) and (not end or oids[k] < end):
            return X.VarBind(oids[k], view[k][1], view[k][2])
        return X.VarBind(start, X.END_OF_MIB_VIEW)

    if pdu.type == X.GET:
        return [get(start) for start, _, _ in pdu.ranges]
    if pdu.type == X.GETNEXT:
        return [next_(*r) for r in pdu.ranges]
    # GetBulk (RFC 2741 7.2.3.3): the non-repeaters once, then the repeaters in turns.
    out = [next_(*r) for r in pdu.ranges[:pdu.non_repeaters]]
    rep = list(pdu.ranges[pdu.non_repeaters:])
    for _ in range(pdu.max_repetitions):
        if not rep:
            break
        row = [next_(*r) for r in rep]
        out += row
        if all(vb.type == X.END_OF_MIB_VIEW for vb in row):
            break
        rep = [(vb.oid, False, r[2]) for vb, r in zip(row, rep)]
    return out


# --- the subagent ------------------------------------------------------------------------------

def _connect(where: str, timeout: float) -> socket.socket:
    """``/path`` (UNIX) or ``tcp:HOST:PORT``."""
    if where.startswith("tcp:"):
        host, _, port = where[4:].rpartition(":")
        return socket.create_connection((host.strip("[]"), int(port)), timeout)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(where)
    except OSError:
        s.close()
        raise
    return s


class Closed(ConnectionError):
    """The master closed the session (or the connection)."""


@dataclass
class Subagent:
    """The AgentX subagent of instance ``name``: :meth:`start` its thread, :meth:`stop` it
    (the supervisor's :meth:`poll` and :meth:`reload` have nothing to do)."""
    name: str
    master: str
    interfaces: list[DataInterface]
    describe: dict[str, str] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _sock: socket.socket | None = None
    _buf: bytes = b""
    _session: int = 0
    _packet: int = 0
    _view: list = field(default_factory=list)
    _view_at: float = -1.0
    _ifindex: dict[int, DataInterface] = field(default_factory=dict)
    _alarms: dict[tuple[str, str], str] = field(default_factory=dict)    # (worker, alarm) -> text
    #: sessions opened so far (a reconnection after snmpd restarted opens another)
    sessions: int = 0

    @classmethod
    def for_run(cls, name: str, specs: list[list[str]], master: str) -> "Subagent":
        side = {"--v4": "v4", "--v6": "v6", "--on-a-stick": "on-a-stick"}
        describe = {str(i): ", ".join(f"{side.get(o, o)} {d}" for o, d in zip(s[::2], s[1::2]))
                    for i, s in enumerate(specs)}
        return cls(name, master, data_interfaces(specs), describe)

    # -- the supervisor's interface ------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="snmp-subagent", daemon=True)
        self._thread.start()

    def poll(self, now: float) -> None:
        pass

    def reload(self) -> None:
        pass

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    # -- connection ------------------------------------------------------------------------------
    def _run(self) -> None:
        delay, failing = RECONNECT_FIRST, None
        while not self._stop.is_set():
            try:
                self._open()
                failing, delay = None, RECONNECT_FIRST
                self._serve()
            except (OSError, X.AgentXError) as e:
                if failing != str(e):          # once per kind of failure, not every retry
                    log.warning("SNMP: no AgentX session with %s (%s); retrying", self.master, e)
                    failing = str(e)
            finally:
                self._close()
            self._stop.wait(delay)
            delay = min(delay * 2, RECONNECT_MAX)

    def _close(self) -> None:
        if self._sock is not None:
            if self._session:
                try:
                    self._sock.sendall(X.close_pdu(self._session, self._next_packet()))
                except OSError:
                    pass
            self._sock.close()
            self._sock, self._session, self._buf = None, 0, b""

    def _next_packet(self) -> int:
        self._packet = (self._packet + 1) & 0xFFFFFFFF
        return self._packet

    def _open(self) -> None:
        self._sock = _connect(self.master, TIMEOUT)
        self._sock.settimeout(None)
        r = self._call(X.open_pdu(self._next_packet(), TIMEOUT, LWAFTR_MIB, f"lwaftr instance {self.name}"))
        if r.error:
            raise OSError(f"the master refused the session (AgentX error {r.error})")
        self._session = r.session
        self._ifindex = {}
        for dif in self.interfaces:
            try:
                self._ifindex[socket.if_nametoindex(dif.name)] = dif
            except OSError:
                log.warning("SNMP: interface %s not found: no IF-MIB row for it", dif.name)
        regs = [(LWAFTR_MIB, 0, 0, 127)]
        for idx in self._ifindex:
            for entry, first, last in ((IF_ENTRY, 10, 11), (IF_ENTRY, 16, 17), (IFX_ENTRY, 6, 7),
                                       (IFX_ENTRY, 10, 11)):
                regs.append((entry + (first, idx), len(entry) + 1, last, 1))
        for subtree, range_subid, upper, priority in regs:
            r = self._call(X.register_pdu(self._session, self._next_packet(), subtree, priority=priority,
                                          range_subid=range_subid, upper_bound=upper))
            if r.error:
                what = ("another subagent has it (a second lwaftr instance on this snmpd?)"
                        if r.error == X.DUPLICATE_REGISTRATION else f"AgentX error {r.error}")
                log.error("SNMP: cannot register %s: %s", ".".join(map(str, subtree)), what)
        self.sessions += 1
        log.info("SNMP: AgentX session %d open with %s: LWAFTR-MIB and IF-MIB rows of %s", self._session,
                 self.master, ", ".join(f"{d.name} (ifIndex {i})" for i, d in self._ifindex.items()) or "nothing")

    def _read(self, timeout: float | None) -> list[X.Pdu]:
        """The PDUs that arrive within ``timeout`` (none if nothing does)."""
        if not select.select([self._sock], [], [], timeout)[0]:
            return []
        chunk = self._sock.recv(65536)
        if not chunk:
            raise Closed("snmpd closed the AgentX connection")
        whole, self._buf = X.split(self._buf + chunk)
        return [X.decode(p) for p in whole]

    def _call(self, pdu: bytes) -> X.Pdu:
        """Send a PDU and wait for its Response (answering what comes meanwhile)."""
        packet = int.from_bytes(pdu[12:16], "big")
        self._sock.sendall(pdu)
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            for p in self._read(max(0.0, deadline - time.monotonic())):
                if p.type == X.RESPONSE and p.packet == packet:
                    return p
                self._handle(p)
        raise TimeoutError("snmpd did not answer")

    def _serve(self) -> None:
        next_alarm = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_alarm:
                next_alarm = now + ALARM_POLL
                self._check_alarms()
            for p in self._read(min(0.5, max(0.0, next_alarm - time.monotonic()))):
                self._handle(p)

    def _handle(self, p: X.Pdu) -> None:
        if p.type in (X.GET, X.GETNEXT, X.GETBULK):
            self._sock.sendall(X.response_pdu(p, answer(self.view(), p)))
        elif p.type == X.TESTSET:
            self._sock.sendall(X.response_pdu(p, [], X.NOT_WRITABLE, 1))
        elif p.type in (X.COMMITSET, X.UNDOSET):
            self._sock.sendall(X.response_pdu(p, []))
        elif p.type == X.CLOSE:
            self._session = 0
            raise Closed(f"snmpd closed the AgentX session (reason {p.reason})")
        elif p.type == X.RESPONSE and p.error:
            log.warning("SNMP: snmpd answered packet %d with AgentX error %d", p.packet, p.error)

    # -- data ---------------------------------------------------------------------------------
    def _snapshot(self) -> snapshot.Snapshot | None:
        try:
            return snapshot.read(self.name)
        except (LookupError, OSError, ValueError, TypeError):
            return None

    def view(self) -> list[tuple[X.OID, int, object]]:
        now = time.monotonic()
        if now - self._view_at >= VIEW_TTL:
            self._view = build_view(self._snapshot(), self._ifindex, self.describe)
            self._view_at = now
        return self._view

    def _raised(self) -> dict[tuple[str, str], str]:
        """The alarms the workers have raised and not cleared: (worker, alarm) -> text."""
        out = {}
        for f in sorted((state.run_dir() / self.name / snapshot.WORKERS).glob(f"*/{state.ALARMS}")):
            try:
                raised = json.loads(f.read_text())
            except (OSError, ValueError):
                continue                 # a worker stopping (or not started): next time
            out.update({(f.parent.name, str(a)): str(t) for a, t in raised.items()})
        return out

    def _check_alarms(self) -> None:
        now = self._raised()
        for key in sorted(now.keys() - self._alarms.keys()):
            self._notify(ALARM_RAISED, *key, now[key])
        for key in sorted(self._alarms.keys() - now.keys()):
            self._notify(ALARM_CLEARED, *key, self._alarms[key])
        self._alarms = now

    def _notify(self, what: X.OID, worker: str, alarm: str, text: str) -> None:
        self._sock.sendall(X.notify_pdu(self._session, self._next_packet(), [
            X.VarBind(SNMP_TRAP_OID, X.OBJECT_IDENTIFIER, what),
            X.VarBind(ALARM_OBJECTS + (1, 0), X.OCTET_STRING, alarm.encode()),
            X.VarBind(ALARM_OBJECTS + (2, 0), X.OCTET_STRING, worker.encode()),
            X.VarBind(ALARM_OBJECTS + (3, 0), X.OCTET_STRING, text.encode()[:255])]))
        log.info("SNMP: notification %s %s (worker %s) sent",
                 "lwaftrAlarmRaised" if what == ALARM_RAISED else "lwaftrAlarmCleared", alarm, worker)


if __name__ == "__main__":
    print(mib_text(), end="")
