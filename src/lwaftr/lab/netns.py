"""Network namespaces, veth pairs and processes inside them, always torn down.

Thin helpers over ``ip`` (iproute2) run with :mod:`subprocess`; part of the
lab (demos and tests), not of the router.  A :class:`Lab` owns everything it
creates: namespaces named ``lw<pid>x<n>-<name>`` (unique per process and per
lab), the processes started in them, and a scratch directory.  Leaving the
``with`` block, by return, exception or ``KeyboardInterrupt``, kills the
processes and deletes the namespaces (their veths go with them)::

    with Lab() as lab:
        a, b = lab.netns("a"), lab.netns("b")
        lab.veth(a, "eth0", b, "eth0", mtu=1500)
        a.addr("eth0", "192.0.2.1/24")
        ...
"""
from __future__ import annotations

import atexit
import itertools
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from lwaftr.io.interfaces import PrivilegeError, require_capabilities

_serial = itertools.count(1)


class LabError(RuntimeError):
    """A lab command failed (the message names the command and its stderr)."""


def unavailable() -> str | None:
    """Why a lab cannot be built here (not root, no ``ip``, no namespaces), or None."""
    if os.geteuid() != 0:
        return "network namespaces need root (run as root, or with sudo)"
    try:
        require_capabilities("to build the lab's network namespaces",
                             ("CAP_SYS_ADMIN", "CAP_NET_ADMIN", "CAP_NET_RAW"))
    except PrivilegeError as e:
        return str(e)
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"'{tool}' is not installed (apt-get install {'iproute2' if tool == 'ip' else 'nftables'})"
    if not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun is missing (no TUN support)"
    probe = f"lw{os.getpid()}probe{next(_serial)}"
    r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if r.returncode != 0:
        return f"cannot create a network namespace: {r.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def run(cmd: list[str], *, check: bool = True, input: str | bytes | None = None, timeout: float = 60,
        text: bool = True) -> subprocess.CompletedProcess:
    """Run ``cmd``; on failure (``check``) raise :class:`LabError` with its stderr."""
    try:
        r = subprocess.run(cmd, input=input, capture_output=True, text=text, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise LabError(f"timed out after {timeout:g} s: {shlex.join(cmd)}") from e
    if check and r.returncode != 0:
        err = r.stderr if text else r.stderr.decode(errors="replace")
        raise LabError(f"exit {r.returncode}: {shlex.join(cmd)}: {err.strip()}")
    return r


class Process:
    """A long-running process in a namespace; stdout and stderr go to files.

    Started in its own session, so :meth:`stop` ends it and anything it
    started, and nothing else."""

    def __init__(self, argv: list[str], out: Path, err: Path, env: dict | None = None) -> None:
        self.argv = argv
        self.out_path, self.err_path = out, err
        with open(out, "wb") as fo, open(err, "wb") as fe:
            self.popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=fo, stderr=fe,
                                          start_new_session=True, env=env)
        self.pid = self.popen.pid

    @property
    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def send_signal(self, sig: int) -> None:
        if self.alive():
            self.popen.send_signal(sig)

    def wait_for(self, pattern: str, timeout: float = 60, stream: str = "stderr", after: int = 0) -> str:
        """Poll ``stream`` until the regex ``pattern`` appears at or after
        character ``after``; return the matching text.  LabError if the process
        exits first or ``timeout`` passes."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            text = getattr(self, stream)
            m = rx.search(text, after)
            if m:
                return m.group(0)
            if not self.alive():
                raise LabError(f"{shlex.join(self.argv)} exited ({self.popen.returncode}) before "
                               f"{pattern!r}:\n{self.stderr[-3000:]}")
            if time.monotonic() > deadline:
                raise LabError(f"no {pattern!r} from {shlex.join(self.argv)} within {timeout:g} s:\n"
                               f"{self.stderr[-3000:]}")
            time.sleep(0.02)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
        """Signal the process (and its session) and wait; SIGKILL if it lingers.
        Returns the exit status."""
        if self.alive():
            try:
                os.killpg(self.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.popen.wait(5)
        return self.popen.returncode


class Netns:
    """One network namespace of a :class:`Lab`."""

    def __init__(self, lab: "Lab", short: str) -> None:
        self.lab = lab
        self.short = short
        self.name = f"{lab.tag}-{short}"

    def __repr__(self) -> str:
        return f"Netns({self.name!r})"

    # -- commands -------------------------------------------------------
    def exec_argv(self, *cmd: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *cmd]

    def run(self, *cmd: str, check: bool = True, input: str | bytes | None = None, timeout: float = 60,
            text: bool = True) -> subprocess.CompletedProcess:
        """Run ``cmd`` inside the namespace and wait for it."""
        return run(self.exec_argv(*cmd), check=check, input=input, timeout=timeout, text=text)

    def python(self, code: str, *args: str, **kw) -> subprocess.CompletedProcess:
        """Run Python ``code`` (this interpreter, so the project is importable) inside."""
        return self.run(sys.executable, "-c", code, *args, **kw)

    def popen(self, *cmd: str, label: str | None = None) -> Process:
        """Start a long-running ``cmd`` inside; the lab stops it at teardown."""
        return self.lab.start(self.exec_argv(*cmd), label or f"{self.short}-{Path(cmd[0]).name}")

    def popen_python(self, code: str, *args: str, label: str | None = None) -> Process:
        return self.popen(sys.executable, "-c", code, *args, label=label or f"{self.short}-py")

    def ip(self, *args: str) -> str:
        return run(["ip", "-n", self.name, *args]).stdout

    def sysctl(self, key: str, value: str | int) -> None:
        self.run("sysctl", "-qw", f"{key}={value}")

    def ethtool_tx_off(self, dev: str) -> None:
        """Checksums in software on ``dev``: a local stack's packets leave finished
        (veth otherwise hands them over with the TCP/UDP checksum left to do)."""
        self.run("ethtool", "-K", dev, "tx", "off")

    def nft(self, script: str) -> None:
        self.run("nft", "-f", "-", input=script)

    # -- configuration --------------------------------------------------
    def link_up(self, dev: str, mtu: int | None = None, address: str | None = None) -> None:
        args = ["link", "set", "dev", dev]
        if mtu is not None:
            args += ["mtu", str(mtu)]
        if address is not None:
            args += ["address", address]
        self.ip(*args, "up")

    def addr(self, dev: str, cidr: str) -> None:
        """Add an address; IPv6 ones without duplicate address detection (usable at once)."""
        extra = ["nodad"] if ":" in cidr else []
        self.ip("addr", "add", cidr, "dev", dev, *extra)

    def route(self, dest: str, via: str | None = None, dev: str | None = None, *extra: str) -> None:
        args = ["route", "add", dest]
        if ":" in dest or (via and ":" in via):
            args.insert(0, "-6")
        if via:
            args += ["via", via]
        if dev:
            args += ["dev", dev]
        self.ip(*args, *extra)

    def quiet_ipv6(self) -> None:
        """No router advertisements or autoconfiguration on any interface made later."""
        for scope in ("all", "default"):
            self.sysctl(f"net.ipv6.conf.{scope}.accept_ra", 0)
            self.sysctl(f"net.ipv6.conf.{scope}.autoconf", 0)
            self.sysctl(f"net.ipv6.conf.{scope}.accept_dad", 0)
            self.sysctl(f"net.ipv6.conf.{scope}.dad_transmits", 0)

    def pids(self) -> list[int]:
        r = run(["ip", "netns", "pids", self.name], check=False)
        return [int(p) for p in r.stdout.split()]


class Lab:
    """Owner of namespaces and processes; a context manager that tears down."""

    def __init__(self, prefix: str = "lw") -> None:
        self.tag = f"{prefix}{os.getpid()}x{next(_serial)}"
        self.namespaces: list[Netns] = []
        self.processes: list[Process] = []
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{self.tag}-"))
        self._closed = False
        atexit.register(self.close)

    def __enter__(self) -> "Lab":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def netns(self, short: str) -> Netns:
        ns = Netns(self, short)
        run(["ip", "netns", "add", ns.name])
        self.namespaces.append(ns)
        ns.ip("link", "set", "dev", "lo", "up")
        return ns

    def veth(self, a: Netns, if_a: str, b: Netns, if_b: str, mtu: int | None = None) -> None:
        """A veth pair ``a:if_a`` <-> ``b:if_b``, created in place (never in
        the caller's namespace), both ends up."""
        a.ip("link", "add", if_a, "type", "veth", "peer", "name", if_b, "netns", b.name)
        a.link_up(if_a, mtu)
        b.link_up(if_b, mtu)

    def start(self, argv: list[str], label: str) -> Process:
        n = len(self.processes)
        p = Process(argv, self.workdir / f"{n:02d}-{label}.out", self.workdir / f"{n:02d}-{label}.err")
        self.processes.append(p)
        return p

    def close(self) -> None:
        """Stop every process, delete every namespace; safe to call twice.
        SIGINT and SIGTERM are held off meanwhile so an impatient Ctrl-C cannot
        leave namespaces behind (they are delivered once the lab is gone)."""
        if self._closed:
            return
        self._closed = True
        main = threading.current_thread() is threading.main_thread()
        if main:
            old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            for p in reversed(self.processes):
                try:
                    p.stop(timeout=5)
                except Exception:   # noqa: BLE001 - teardown goes on whatever happens
                    pass
            for ns in reversed(self.namespaces):
                for pid in ns.pids():           # anything else still inside (ours: the namespace is)
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                run(["ip", "netns", "del", ns.name], check=False)
            shutil.rmtree(self.workdir, ignore_errors=True)
        finally:
            if main:
                signal.pthread_sigmask(signal.SIG_SETMASK, old)
            atexit.unregister(self.close)
