"""BGP announcements of a supervised instance, by BIRD 2.

With ``lwaftr { bgp { enable true; ... } }`` the supervisor of ``lwaftr run``
(see :mod:`lwaftr.io.supervisor`) runs one BIRD (Debian ``bird2``) in the
lwAFTR's namespace, configured from the lwAFTR's configuration:

* one BGP session per worker interface, from the address the worker's TAP
  carries (``cp-IFACE``, on a stick ``cp4-``/``cp6-IFACE``; see
  :mod:`lwaftr.io.tap`) to the peer on that link (default: the instance's
  next hop on that side);
* on the IPv4 side it announces the lwAFTR's IPv4 prefixes (configured, or
  the softwires' public addresses collapsed into the fewest covering
  prefixes), on the IPv6 side the BR addresses (/128s) or the configured
  IPv6 prefixes; next hop self, so traffic comes to the worker's own address;
* each worker's routes are static device routes *via its TAP*, in a routing
  table of their own, exported only to that worker's sessions.  The TAP
  exists while the worker process lives: when a worker dies its routes become
  unreachable and its sessions drop (the upstream notices within the hold
  time, 3 s by default, or the BFD detection time), so the upstream
  withdraws them and sends everything to the other workers and boxes (ECMP);
  when the supervisor has restarted the worker, its TAP is back, the sessions
  come up again and re-announce.  A worker whose loop hangs stops passing
  its TAP's frames too, so its keepalives stop as well.

Files live in ``$LWAFTR_RUN_DIR/NAME/bird/``: ``bird.conf`` (generated),
``bird.ctl`` (BIRD's control socket: ``birdc -s .../bird.ctl show protocols``)
and ``bird.pid``.  BIRD's own log lines are relayed to ours (logger
``lwaftr.bird``), and session changes are logged from ``show protocols``,
read every second.  A reload (SIGHUP) recomputes the announcements in a
thread and reconfigures BIRD when its configuration text changes; BIRD is
restarted if it dies, and stopped (announcements withdrawn by BGP Cease
notifications) before the workers when the supervisor stops.
"""
from __future__ import annotations

import ipaddress
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lwaftr.config.errors import ConfigError
from lwaftr.config.model import BUILT_IN, Config
from lwaftr.io.tap import tap_name

log = logging.getLogger("lwaftr.bird")

#: How often ``show protocols`` is read for session changes (seconds).
STATE_POLL = 1.0
#: BIRD restarts after it died: first delay and cap (seconds).
RESTART_FIRST, RESTART_MAX = 1.0, 30.0
#: Timers besides hold and keepalive: connect soon after a TAP comes back,
#: retry often, and do not back off for long after a failure.
SESSION_TIMERS = ("connect delay time 1; connect retry time 2; error wait time 1, 8; "
                  "error forget time 30;")

IPNet = ipaddress.IPv4Network | ipaddress.IPv6Network


class RoutingError(ConfigError):
    """BGP is asked for and cannot be run (BIRD missing, built-in control plane,
    a configuration BIRD refuses)."""


# --- what to announce ----------------------------------------------------------------------------

def aggregate_ipv4(addresses: np.ndarray) -> list[ipaddress.IPv4Network]:
    """The fewest prefixes covering exactly ``addresses`` (host-order uint32, any
    order, repeats allowed): what :func:`ipaddress.collapse_addresses` gives,
    computed over runs of consecutive addresses so a million-address table takes
    milliseconds."""
    a = np.unique(np.asarray(addresses, np.uint32)).astype(np.int64)
    if not a.size:
        return []
    breaks = np.flatnonzero(np.diff(a) != 1) + 1
    starts = a[np.r_[0, breaks]].tolist()
    ends = a[np.r_[breaks - 1, a.size - 1]].tolist()
    out: list[ipaddress.IPv4Network] = []
    for s, e in zip(starts, ends):
        out.extend(ipaddress.summarize_address_range(ipaddress.IPv4Address(s), ipaddress.IPv4Address(e)))
    return out


def table_ipv4(table) -> np.ndarray:
    """The public IPv4 addresses of a compiled binding table (host-order uint32)."""
    from lwaftr.bindingtable.table import ADDR_OCCUPIED
    t = np.asarray(table.addr_tab)
    return (t[(t & ADDR_OCCUPIED) != 0] >> np.uint64(32)).astype(np.uint32)


def table_brs(table) -> list[bytes]:
    """The BR addresses of a compiled binding table (16 bytes each)."""
    return [bytes(r) for r in np.asarray(table.br_tab) if r.any()]


def announced(cfg: Config, table) -> tuple[list[ipaddress.IPv4Network], list[ipaddress.IPv6Network]]:
    """(IPv4 prefixes, IPv6 prefixes) to announce: the configured ones, else the
    softwires' addresses aggregated and the BR addresses as /128s."""
    bgp = cfg.bgp
    if bgp.ipv4_prefixes:
        v4 = [ipaddress.IPv4Network((a, n)) for a, n in bgp.ipv4_prefixes]
    else:
        v4 = aggregate_ipv4(table_ipv4(table))
    if bgp.ipv6_prefixes:
        v6 = [ipaddress.IPv6Network((a, n)) for a, n in bgp.ipv6_prefixes]
    else:
        v6 = sorted({ipaddress.IPv6Network((b, 128)) for b in table_brs(table)})
    return v4, v6


# --- sessions and BIRD's configuration ------------------------------------------------------------

@dataclass(frozen=True)
class Session:
    """One BGP session: a worker's interface on one side, to its peer."""
    name: str            # BIRD protocol name
    worker: str
    family: int          # 4 or 6
    tap: str
    local: str
    peer: str
    local_as: int
    peer_as: int
    direct: bool         # the peer is inside the TAP's prefix (else: multihop, TTL 1)

    def describe(self) -> str:
        return (f"worker {self.worker} IPv{self.family}, {self.tap} {self.local} -> {self.peer} "
                f"AS {self.peer_as}")


def worker_taps(spec: list[str]) -> dict[int, str]:
    """The TAPs of a worker from its interface arguments (``--v4 A --v6 B`` or
    ``--on-a-stick C``), by side."""
    args = dict(zip(spec[::2], spec[1::2]))
    if "--on-a-stick" in args:
        stick = args["--on-a-stick"]
        return {4: tap_name(stick, 4), 6: tap_name(stick, 6)}
    return {4: tap_name(args["--v4"]), 6: tap_name(args["--v6"])}


def plan(cfg: Config, specs: list[list[str]]) -> tuple[list[Session], list[str]]:
    """The sessions of worker ``i`` (instance ``i``, interfaces ``specs[i]``), and
    notes on the sides that get none (no peer address)."""
    bgp, cp = cfg.bgp, cfg.control_plane
    sessions, notes = [], []
    for i, spec in enumerate(specs):
        inst = cfg.instances[i]
        if any((o.device, o.external_device) == (inst.device, inst.external_device) for o in cfg.instances[:i]):
            continue                    # another queue of a device: its workers share the TAPs and sessions
        taps = worker_taps(spec)
        peer = bgp.peer(inst.device)
        for family, addrs, explicit, peer_as, plen in (
                (4, inst.external, peer.ipv4_address, peer.ipv4_peer_as, cp.external_prefix_length),
                (6, inst.internal, peer.ipv6_address, peer.ipv6_peer_as, cp.internal_prefix_length)):
            remote = explicit if explicit is not None else addrs.next_hop.ip
            if remote is None:
                notes.append(f"worker {i} IPv{family} ({taps[family]}): no BGP session (the next hop is a MAC; "
                             f"give lwaftr/bgp/peer[device={inst.device}]/ipv{family}-address)")
                continue
            local, remote_ip = ipaddress.ip_address(addrs.ip), ipaddress.ip_address(remote)
            net = ipaddress.ip_network(f"{local}/{plen}", strict=False)
            sessions.append(Session(f"w{i}_v{family}", str(i), family, taps[family], str(local), str(remote_ip),
                                    bgp.local_as, peer_as if peer_as is not None else bgp.peer_as,
                                    remote_ip in net))
    return sessions, notes


@dataclass(frozen=True)
class OspfRouter:
    """One OSPF router of a worker: OSPFv2 on its IPv4 TAP or OSPFv3 on its IPv6 TAP."""
    name: str            # BIRD protocol name
    worker: str
    family: int          # 4 (OSPFv2) or 6 (OSPFv3)
    tap: str
    router_id: str

    def describe(self) -> str:
        return f"worker {self.worker} OSPFv{2 if self.family == 4 else 3} on {self.tap}, router ID {self.router_id}"


def ospf_plan(cfg: Config, specs: list[list[str]]) -> list[OspfRouter]:
    """The OSPF routers of worker ``i`` (instance ``i``, interfaces ``specs[i]``):
    none unless OSPF is enabled."""
    if not cfg.ospf.enable:
        return []
    out = []
    for i, spec in enumerate(specs):
        taps = worker_taps(spec)
        rid = str(ipaddress.IPv4Address(cfg.instances[i].external.ip))
        out += [OspfRouter(f"w{i}_ospf{f}", str(i), f, taps[f], rid) for f in (4, 6)]
    return out


def _render_ospf(cfg: Config, routers: list[OspfRouter], v4: list[IPNet], v6: list[IPNet]) -> list[str]:
    o, out = cfg.ospf, []
    for r in routers:
        fam = f"ipv{r.family}"
        table, routes = f"{r.name}_table", f"{r.name}_routes"
        out += ["", f"# {r.describe()}",
                f"{fam} table {table};",
                f"protocol static {routes} {{",
                f"  {fam} {{ table {table}; }};",
                *(f'  route {p} via "{r.tap}";' for p in (v4 if r.family == 4 else v6)),
                "}",
                f"protocol ospf v{2 if r.family == 4 else 3} {r.name} {{",
                f'  description "{r.describe()}";',
                f"  router id {r.router_id};",
                f'  {fam} {{ table {table}; import none; export where proto = "{routes}"; }};',
                f"  area {o.area} {{",
                f'    interface "{r.tap}" {{ type ptp; hello {o.hello_interval}; dead {o.dead_interval}; '
                f"cost {o.cost}; }};",
                "  };",
                "}"]
    return out


def render(cfg: Config, sessions: list[Session], v4: list[IPNet], v6: list[IPNet], name: str,
           routers: list[OspfRouter] = ()) -> str:
    """BIRD 2 configuration text: the BGP ``sessions`` and the OSPF ``routers``."""
    bgp = cfg.bgp
    out = [f"# lwaftr instance {name}: BGP/OSPF announcements, generated from {cfg.source or 'its configuration'}",
           "# (rewritten on every start and reload: edit the lwaftr configuration instead).",
           "log stderr { info, remote, warning, error, auth, fatal, bug };",
           f"router id {ipaddress.IPv4Address(cfg.instances[0].external.ip)};",
           "timeformat protocol iso long;",
           "",
           "protocol device lwaftr_device { scan time 10; }"]
    if bgp.bfd and sessions:
        us = max(1, round(bgp.bfd_interval * 1e6))
        every = f"{us // 1000} ms" if us % 1000 == 0 else f"{us} us"
        taps = ", ".join(f'"{s.tap}"' for s in sessions) or '"cp-*"'
        out += ["", "protocol bfd lwaftr_bfd {",
                f"  interface {taps} {{ min rx interval {every}; min tx interval {every}; "
                f"multiplier {bgp.bfd_multiplier}; }};", "}"]
    for s in sessions:
        fam = f"ipv{s.family}"
        table, routes = f"{s.name}_table", f"{s.name}_routes"
        prefixes = v4 if s.family == 4 else v6
        out += ["", f"# {s.describe()}",
                f"{fam} table {table};",
                f"protocol static {routes} {{",
                f"  {fam} {{ table {table}; }};",
                *(f'  route {p} via "{s.tap}";' for p in prefixes),
                "}",
                f"protocol bgp {s.name} {{",
                f'  description "{s.describe()}";',
                f"  local {s.local} as {s.local_as};",
                f"  neighbor {s.peer} as {s.peer_as};",
                f'  interface "{s.tap}"; direct;' if s.direct else "  multihop 1;",
                f"  hold time {bgp.hold_time}; startup hold time {bgp.hold_time}; "
                f"keepalive time {bgp.keepalive_time};",
                f"  {SESSION_TIMERS}",
                "  graceful restart off;",
                *(["  bfd on;"] if bgp.bfd else []),
                f'  {fam} {{ table {table}; import none; export where proto = "{routes}"; next hop self; }};',
                "}"]
    out += _render_ospf(cfg, list(routers), v4, v6)
    return "\n".join(out) + "\n"


# --- BIRD's control socket ----------------------------------------------------------------------

_FINAL = re.compile(rb"^(\d{4}) ", re.M)


def request(sock: Path | str, command: str, timeout: float = 5.0) -> list[tuple[int, str]]:
    """Send one command to BIRD's control socket; its reply as (code, text) lines
    (continuation lines get the code of the line they continue)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(sock))
        buf = b""
        while b"\n" not in buf:                  # "0001 BIRD 2.0.12 ready."
            chunk = s.recv(4096)
            if not chunk:
                raise OSError("BIRD closed the control connection")
            buf += chunk
        buf = buf.split(b"\n", 1)[1]
        s.sendall(command.encode() + b"\n")
        while not _complete(buf):
            chunk = s.recv(65536)
            if not chunk:
                raise OSError("BIRD closed the control connection")
            buf += chunk
    out, code = [], 0
    for line in buf.decode(errors="replace").splitlines():
        if len(line) >= 5 and line[:4].isdigit() and line[4] in " -":
            code = int(line[:4])
            out.append((code, line[5:]))
        else:
            out.append((code, line[1:] if line.startswith(" ") else line))
    return out


def _complete(buf: bytes) -> bool:
    """A reply ends with a line ``NNNN text`` (a code followed by a space)."""
    return buf.endswith(b"\n") and any(_FINAL.match(line) for line in buf.splitlines()[-1:])


def protocols(sock: Path | str, timeout: float = 5.0) -> dict[str, tuple[str, str]]:
    """``show protocols``: name -> (state, info), e.g. ``("up", "Established")``."""
    out = {}
    for code, text in request(sock, "show protocols", timeout):
        if code != 1002:
            continue
        f = text.split()
        if len(f) >= 4:
            # name proto table state since(date time, timeformat iso long) info...
            out[f[0]] = (f[3], " ".join(f[6:]))
    return out


# --- the daemon --------------------------------------------------------------------------------

def _binary() -> str | None:
    return shutil.which("bird") or next((p for p in ("/usr/sbin/bird", "/sbin/bird") if os.path.exists(p)), None)


def _parent_death_signal() -> None:
    """In the child: SIGTERM when the supervisor dies, so no BIRD is left announcing
    routes for workers nobody supervises."""
    import ctypes
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)      # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class Bird:
    """BIRD for one supervised instance: :meth:`start`, :meth:`poll` from the
    supervisor's loop, :meth:`reload` on SIGHUP, :meth:`stop`."""

    def __init__(self, conf_path: str, cfg: Config, table, specs: list[list[str]], name: str,
                 directory: Path, binary: str) -> None:
        self.conf_path, self.specs, self.name = conf_path, specs, name
        self.directory, self.binary = Path(directory), binary
        self.conf_file = self.directory / "bird.conf"
        self.sock = self.directory / "bird.ctl"
        self.pid_file = self.directory / "bird.pid"
        self.cfg = cfg
        self.sessions, self.text, self.v4, self.v6 = self._build(cfg, table)
        self.proc: subprocess.Popen | None = None
        self.states: dict[str, tuple[str, str]] = {}
        self._up: dict[str, bool] = {}
        self._state_next = 0.0
        self._restart_at: float | None = None
        self._delay = RESTART_FIRST
        self._started = 0.0
        self._partial = b""
        self._reloading: threading.Thread | None = None
        self._reloaded: tuple | None = None

    @classmethod
    def for_run(cls, conf_path: str, cfg: Config, table, specs: list[list[str]], name: str,
                mode: str | None = None) -> "Bird | None":
        """The BIRD of ``lwaftr run --conf`` (supervised), or None when BGP is off.
        RoutingError when it is on and cannot run."""
        if not (cfg.bgp.enable or cfg.ospf.enable):
            return None
        what = "bgp" if cfg.bgp.enable else "ospf"
        if (mode or cfg.control_plane.mode) == BUILT_IN:
            raise RoutingError(f"{what} needs the kernel control plane (it runs over the TAPs)",
                               file=conf_path, path=f"lwaftr/{what}/enable")
        binary = _binary()
        if binary is None:
            raise RoutingError(f"{what} is enabled but BIRD 2 is not installed (apt-get install bird2)",
                               file=conf_path, path=f"lwaftr/{what}/enable")
        from lwaftr.io import state
        bird = cls(conf_path, cfg, table, specs, name, state.run_dir() / name / "bird", binary)
        if len(os.fsencode(bird.sock)) > 107:
            raise RoutingError(f"BIRD's control socket path {bird.sock} is too long for a UNIX socket "
                               f"(give a shorter LWAFTR_RUN_DIR or --name)", file=conf_path)
        bird.check()
        return bird

    def _build(self, cfg: Config, table) -> tuple[list[Session], str, list, list]:
        sessions, notes = plan(cfg, self.specs) if cfg.bgp.enable else ([], [])
        for n in notes:
            log.warning("%s", n)
        v4, v6 = announced(cfg, table)
        self.routers = ospf_plan(cfg, self.specs)
        return sessions, render(cfg, sessions, v4, v6, self.name, self.routers), v4, v6

    def check(self, text: str | None = None) -> None:
        """Have BIRD parse the configuration (``bird -p``); RoutingError if it refuses."""
        import tempfile
        with tempfile.NamedTemporaryFile("w", suffix=".conf", prefix="lwaftr-bird-") as fh:
            fh.write(self.text if text is None else text)
            fh.flush()
            r = subprocess.run([self.binary, "-p", "-c", fh.name], capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise RoutingError(f"BIRD refuses the generated configuration: {r.stderr.strip()}",
                               file=self.conf_path, path="lwaftr/bgp")

    def _summary(self) -> str:
        return (f"{len(self.sessions)} BGP sessions, {len(self.routers)} OSPF routers; IPv4 {', '.join(map(str, self.v4)) or 'nothing'}; "
                f"IPv6 {', '.join(map(str, self.v6)) or 'nothing'}")

    # -- process ---------------------------------------------------------------------------------
    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._stop_stale()
        self.conf_file.write_text(self.text)
        try:
            self.sock.unlink()
        except OSError:
            pass
        try:
            self.proc = subprocess.Popen(
                [self.binary, "-f", "-c", str(self.conf_file), "-s", str(self.sock), "-P", str(self.pid_file)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                start_new_session=True, preexec_fn=_parent_death_signal)    # stopped by us, first
        except OSError as e:
            log.error("cannot start BIRD (%s); trying again in %.0f s", e, self._delay)
            self._restart_at = time.monotonic() + self._delay
            self._delay = min(self._delay * 2, RESTART_MAX)
            return
        os.set_blocking(self.proc.stderr.fileno(), False)
        self._started, self._restart_at, self._partial = time.monotonic(), None, b""
        self._up = {}
        log.info("BIRD started (pid %d, control socket %s): %s", self.proc.pid, self.sock, self._summary())

    def _stop_stale(self) -> None:
        """A BIRD left by an earlier run of this instance (the supervisor was killed)."""
        try:
            pid = int(self.pid_file.read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return
        if str(self.conf_file).encode() in cmdline:
            log.warning("stopping a BIRD left by an earlier run (pid %d)", pid)
            os.kill(pid, signal.SIGTERM)
            for _ in range(50):
                if not Path(f"/proc/{pid}").exists():
                    break
                time.sleep(0.1)

    def _relay(self) -> None:
        """BIRD's log lines (stderr) into ours."""
        if self.proc is None or self.proc.stderr is None:
            return
        fd = self.proc.stderr.fileno()
        while True:
            try:
                chunk = os.read(fd, 65536)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            if not chunk:
                break
            self._partial += chunk
        *lines, self._partial = self._partial.split(b"\n")
        for raw in lines:
            line = raw.decode(errors="replace").strip()
            m = re.match(r"^\S+ \S+ <(\w+)> (.*)$", line)
            cls, msg = (m.group(1), m.group(2)) if m else ("INFO", line)
            if not msg:
                continue
            if msg == "Shutdown completed":      # (BIRD files it under FATAL)
                cls = "INFO"
            level = (logging.ERROR if cls in ("ERR", "FATAL", "BUG") else
                     logging.WARNING if cls in ("WARN", "RMT", "AUTH") else logging.INFO)
            log.log(level, "bird: %s", msg)

    def poll(self, now: float) -> None:
        """From the supervisor's loop: relay logs, follow sessions, restart BIRD if
        it died, apply a finished reload."""
        self._relay()
        if self.proc is not None and self.proc.poll() is not None:
            self._relay()
            code = self.proc.returncode
            self.proc.stderr.close()
            self.proc = None
            self._mark_all_down("BIRD exited")
            if now - self._started > 60:
                self._delay = RESTART_FIRST
            log.error("BIRD exited with status %s; restarting in %.0f s", code, self._delay)
            self._restart_at = now + self._delay
            self._delay = min(self._delay * 2, RESTART_MAX)
        if self.proc is None:
            if self._restart_at is not None and now >= self._restart_at:
                self.start()
            return
        if self._reloaded is not None:
            self._apply_reload()
        if now >= self._state_next:
            self._state_next = now + STATE_POLL
            self._follow_sessions()

    def _follow_sessions(self) -> None:
        try:
            states = protocols(self.sock, timeout=2.0)
        except OSError:
            return                               # starting, or busy: next time
        for r in self.routers:
            state, info = states.get(r.name, ("?", ""))
            up = state == "up"
            if up != self._up.get(r.name, False):
                self._up[r.name] = up
                (log.info if up else log.warning)("OSPF %s: %s (%s)", "up" if up else "down", r.name,
                                                  r.describe() if up else info or state)
        self.states = {s.name: states.get(s.name, ("?", "")) for s in self.sessions}
        for s in self.sessions:
            state, info = self.states[s.name]
            up = state == "up"
            if up == self._up.get(s.name, False):
                self._up.setdefault(s.name, up)
                continue
            self._up[s.name] = up
            fields = {"session": s.name, "worker": s.worker, "peer": s.peer, "state": state, "info": info}
            if up:
                what = ", ".join(map(str, self.v4 if s.family == 4 else self.v6)) or "nothing"
                log.info("BGP session up: %s (%s), announcing %s", s.name, s.describe(), what,
                         extra={"fields": fields})
            else:
                log.warning("BGP session down: %s (%s): %s", s.name, s.describe(), info or state,
                            extra={"fields": fields})

    def _mark_all_down(self, why: str, level: int = logging.WARNING) -> None:
        for s in self.sessions:
            if self._up.get(s.name):
                log.log(level, "BGP session down: %s (%s): %s", s.name, s.describe(), why)
            self._up[s.name] = False

    def session_states(self) -> dict[str, tuple[str, str]]:
        """The last ``show protocols`` states of our sessions (name -> (state, info))."""
        return dict(self.states)

    # -- reload ----------------------------------------------------------------------------------
    def reload(self) -> None:
        """Recompute the announcements from the configuration file in a thread
        (a big binding table takes a while); :meth:`poll` applies the result."""
        if self._reloading is not None and self._reloading.is_alive():
            log.info("BGP: a reload is under way; this one follows it")
            t = self._reloading
            self._reloading = threading.Thread(target=lambda: (t.join(), self._load()), daemon=True)
        else:
            self._reloading = threading.Thread(target=self._load, daemon=True)
        self._reloading.start()

    def _load(self) -> None:
        from lwaftr.config.load import load_table
        try:
            cfg, table = load_table(self.conf_path)
            if (cfg.instances, cfg.control_plane) != (self.cfg.instances, self.cfg.control_plane):
                raise ConfigError("changes to instances, interfaces, addresses or the control plane need a "
                                  "restart", file=self.conf_path)
            if (cfg.bgp.enable, cfg.ospf.enable) != (self.cfg.bgp.enable, self.cfg.ospf.enable):
                raise ConfigError("turning BGP or OSPF on or off needs a restart", file=self.conf_path)
            sessions, text, v4, v6 = self._build(cfg, table)
            if text != self.text:
                self.check(text)
            self._reloaded = (cfg, sessions, text, v4, v6, None)
        except (ConfigError, OSError, ValueError) as e:
            self._reloaded = (None, None, None, None, None, e)

    def _apply_reload(self) -> None:
        cfg, sessions, text, v4, v6, err = self._reloaded
        self._reloaded = None
        if err is not None:
            log.error("BGP: reload refused, keeping the running announcements: %s", err)
            return
        if text == self.text:
            log.info("BGP: reload changes nothing")
            return
        self.conf_file.write_text(text)
        try:
            reply = request(self.sock, f'configure "{self.conf_file}"', timeout=30)
        except OSError as e:
            log.error("BGP: cannot reach BIRD to reconfigure it (%s); it gets the new configuration "
                      "when it restarts", e)
            self.cfg, self.sessions, self.text, self.v4, self.v6 = cfg, sessions, text, v4, v6
            return
        bad = [t for c, t in reply if c >= 8000]
        if bad:
            self.conf_file.write_text(self.text)
            log.error("BGP: BIRD refused the new configuration, keeping the running one: %s", "; ".join(bad))
            return
        self.cfg, self.sessions, self.text, self.v4, self.v6 = cfg, sessions, text, v4, v6
        log.info("BGP: reconfigured: %s", self._summary())

    # -- stop ------------------------------------------------------------------------------------
    def stop(self, timeout: float = 10.0) -> None:
        """Stop BIRD (it closes its sessions with a Cease notification, so the peers
        withdraw at once) and remove its files."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self._relay()
            self._mark_all_down("BIRD stopped", logging.INFO)
            log.info("BIRD stopped")
            self.proc.stderr.close()
            self.proc = None
        shutil.rmtree(self.directory, ignore_errors=True)
