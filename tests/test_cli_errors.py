"""What a user gets for every file and interface they name, through the ``lwaftr`` console
script as they run it: one line naming it and what is wrong, the README's exit code, no
traceback.  Exit codes: 0 success, 1 a check failed or the thing asked about is absent,
2 bad usage or bad input."""
from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import dpkt
import pytest

from lwaftr.io.pcap import read_frames

from conftest import VECTORS

LWAFTR = str(Path(sys.executable).with_name("lwaftr"))
CONF = VECTORS / "icmp_on_fail.conf"
IN4 = VECTORS / "tcp-ipv4-3frags-bound.pcap"          # 3 frames
EMPTY = VECTORS / "empty.pcap"
NS = f"lwaftr-err-{os.getpid()}"
ROOTED = os.geteuid() == 0 and shutil.which("ip") is not None


def lwaftr(*args: str | Path, ns: str | None = None, wrap: tuple[str, ...] = (),
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(wrap) + [LWAFTR, *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


def said(r: subprocess.CompletedProcess, code: int, line: str) -> None:
    """Exit ``code`` and exactly ``line`` on stderr."""
    assert "Traceback" not in r.stderr, r.stderr
    assert (r.returncode, r.stderr) == (code, line + "\n")


def check(tmp_path: Path, in4: Path, in6: Path = EMPTY, out4: Path | None = None) -> subprocess.CompletedProcess:
    return lwaftr("check", CONF, in4, in6, out4 or tmp_path / "o4.pcap", tmp_path / "o6.pcap")


def pcap_bytes(frames: list[bytes], order: str = "<", nano: bool = False, linktype: int = 1) -> bytes:
    """A classic pcap file in the given byte order and timestamp resolution."""
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 65535, linktype)
    for i, f in enumerate(frames):
        out += struct.pack(order + "IIII", i, 123456789 if nano else 123456, len(f), len(f)) + f
    return out


# --- captures -------------------------------------------------------------------------------------

def test_missing_input_capture(tmp_path):
    said(check(tmp_path, IN4, Path("/nonexistent.pcap")), 2,
         "lwaftr check: /nonexistent.pcap: cannot read: No such file or directory")
    assert not (tmp_path / "o4.pcap").exists()


def test_input_that_is_not_a_capture(tmp_path):
    bad = tmp_path / "bad.pcap"
    bad.write_text("garbage\n")
    said(check(tmp_path, bad), 2, f"lwaftr check: {bad}: not a pcap or pcapng file (it starts with 67 61 72 62)")
    bad.write_bytes(b"")
    said(check(tmp_path, bad), 2, f"lwaftr check: {bad}: empty file, not a pcap or pcapng capture")
    said(check(tmp_path, tmp_path), 2, f"lwaftr check: {tmp_path}: cannot read: Is a directory")


def test_capture_of_another_link_type(tmp_path):
    cooked = tmp_path / "cooked.pcap"
    cooked.write_bytes(pcap_bytes(read_frames(IN4), linktype=113))
    said(check(tmp_path, cooked), 2, f"lwaftr check: {cooked}: link type 113 (Linux cooked (SLL)); "
                                     "only Ethernet (1) captures are read")


def test_pcap_byte_orders_and_resolutions_and_pcapng_give_the_same_run(tmp_path):
    frames = read_frames(IN4)
    assert len(frames) == 3
    r = check(tmp_path, IN4)
    assert r.returncode == 0, r.stderr
    expected = read_frames(tmp_path / "o6.pcap")
    assert expected
    forms = {f"{o}{'ns' if nano else 'us'}.pcap": pcap_bytes(frames, o, nano)
             for o in "<>" for nano in (False, True)}
    ng = tmp_path / "wireshark.pcapng"
    with open(ng, "wb") as fh:
        w = dpkt.pcapng.Writer(fh)
        for i, f in enumerate(frames):
            w.writepkt(f, ts=float(i))
    for name, data in forms.items():
        (tmp_path / name).write_bytes(data)
    for name in [*forms, ng.name]:
        (tmp_path / "o6.pcap").unlink()
        r = check(tmp_path, tmp_path / name)
        assert r.returncode == 0 and r.stderr == "", (name, r.stderr)
        assert read_frames(tmp_path / "o6.pcap") == expected, name


@pytest.mark.parametrize("cut", [1, 20])      # inside the last frame; inside its record header
def test_truncated_capture_says_how_many_frames_were_read(tmp_path, cut):
    data = IN4.read_bytes()
    last = len(read_frames(IN4)[-1])
    cutfile = tmp_path / "cut.pcap"
    cutfile.write_bytes(data[:-cut] if cut < last else data[:-(last + 16 - 4)])
    said(check(tmp_path, cutfile), 2,
         f"lwaftr check: {cutfile}: truncated: the last record is cut short; 2 frames read before it")
    assert not (tmp_path / "o4.pcap").exists()


def test_truncated_pcapng(tmp_path):
    ng = tmp_path / "cut.pcapng"
    with open(ng, "wb") as fh:
        w = dpkt.pcapng.Writer(fh)
        for i, f in enumerate(read_frames(IN4)):
            w.writepkt(f, ts=float(i))
    ng.write_bytes(ng.read_bytes()[:-10])
    said(check(tmp_path, ng), 2,
         f"lwaftr check: {ng}: truncated: the last record is cut short; 2 frames read before it")


def test_output_capture_that_cannot_be_written(tmp_path):
    out = tmp_path / "no" / "o4.pcap"
    said(check(tmp_path, IN4, out4=out), 2, f"lwaftr check: {out}: cannot write: No such file or directory")


def test_missing_counters_file(tmp_path):
    r = lwaftr("check", "--counters", tmp_path / "c.json", CONF, IN4, EMPTY, tmp_path / "o4", tmp_path / "o6")
    said(r, 2, f"lwaftr check: {tmp_path / 'c.json'}: cannot read: No such file or directory")


def test_bench_and_generate_configuration_name_their_files(tmp_path):
    bad = tmp_path / "bad.pcap"
    bad.write_text("garbage\n")
    said(lwaftr("bench", "--duration", "0.1", CONF, bad, EMPTY), 2,
         f"lwaftr bench: {bad}: not a pcap or pcapng file (it starts with 67 61 72 62)")
    out = tmp_path / "no" / "v4.pcap"
    r = lwaftr("generate-configuration", "-o", tmp_path / "g.conf", "--pcap-v4", out, "--npackets", "2",
               "193.5.1.100", "1", "fc00::100", "fc00:1:2:3:4:5:0:7e", "6")
    said(r, 2, f"lwaftr generate-configuration: {out}: cannot write: No such file or directory")


# --- nothing running --------------------------------------------------------------------------

@pytest.mark.parametrize("cmd", [["counters"], ["query", "lwaftr", "drop"], ["reload"],
                                 ["monitor", "192.0.2.1"]])
def test_commands_about_a_running_instance_exit_1_when_none_runs(tmp_path, cmd):
    env = dict(os.environ, LWAFTR_RUN_DIR=str(tmp_path / "run"))
    r = lwaftr(*cmd, env=env)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith(f"lwaftr {cmd[0]}: ") and len(r.stderr.splitlines()) == 1, r.stderr


# --- interfaces ----------------------------------------------------------------------------------

@pytest.fixture
def netns():
    """A namespace of this test's own: a veth pair v0 (up) - v1 (down), and lo."""
    if not ROOTED:
        pytest.skip("needs root and iproute2")
    subprocess.run(["ip", "netns", "add", NS], check=True, capture_output=True)
    try:
        subprocess.run(["ip", "-n", NS, "link", "add", "v0", "type", "veth", "peer", "name", "v1"], check=True,
                       capture_output=True)
        subprocess.run(["ip", "-n", NS, "link", "set", "v0", "up"], check=True, capture_output=True)
        yield NS
    finally:
        subprocess.run(["ip", "netns", "del", NS], capture_output=True)


def test_run_names_a_missing_interface(netns):
    said(lwaftr("run", "--conf", CONF, "--v4", "nosuch0", "--v6", "nosuch1", ns=netns), 2,
         "lwaftr run: interface nosuch0 (--v4): does not exist (present here: lo, v0, v1)")
    # The configuration's own devices, under the supervisor (icmp_on_fail.conf: device "test", on a stick).
    said(lwaftr("run", "--conf", CONF, ns=netns), 2,
         "lwaftr run: interface test (instance 0, on a stick, from the configuration): "
         "does not exist (present here: lo, v0, v1)")


def test_run_names_a_down_or_non_ethernet_interface(netns):
    said(lwaftr("run", "--conf", CONF, "--v4", "v0", "--v6", "v1", ns=netns), 2,
         "lwaftr run: interface v1 (--v6): is down (ip link set v1 up)")
    said(lwaftr("run", "--conf", CONF, "--instance", "lo", ns=netns), 2,
         "lwaftr run: interface lo (instance 0, on a stick): is a loopback interface, not Ethernet")
    said(lwaftr("run", "--conf", CONF, "--on-a-stick", "a/b", ns=netns), 2,
         "lwaftr run: interface a/b (--on-a-stick): is not a valid interface name "
         "(1-15 characters, no '/', ':' or blanks)")
    # Nothing was touched: v1 is still down.
    show = subprocess.run(["ip", "-n", netns, "-o", "link", "show", "v1"], capture_output=True, text=True).stdout
    assert "state DOWN" in show and ",UP" not in show


def test_run_names_the_missing_capability(netns):
    if shutil.which("setpriv") is None:
        pytest.skip("no setpriv")
    said(lwaftr("run", "--conf", CONF, "--on-a-stick", "v0", ns=netns, wrap=("setpriv", "--bounding-set", "-net_raw")),
         2, "lwaftr run: needs CAP_NET_ADMIN and CAP_NET_RAW to forward on interfaces; missing: CAP_NET_RAW")


def test_demo_names_the_missing_capability_and_shows_the_offline_example():
    if not ROOTED or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv")
    r = lwaftr("demo", wrap=("setpriv", "--bounding-set", "-sys_admin"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("lwaftr demo: no live lab here: needs CAP_SYS_ADMIN, CAP_NET_ADMIN and CAP_NET_RAW "
                               "to build the lab's network namespaces; missing: CAP_SYS_ADMIN.\n"), r.stdout
    assert "carol -> alice" in r.stdout


# --- every subcommand's help -------------------------------------------------------------------

def _subcommands(parser, prefix: tuple[str, ...] = ()):
    import argparse
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*prefix, name), sub
                yield from _subcommands(sub, (*prefix, name))


def test_every_subcommand_explains_each_argument_and_gives_an_example():
    import argparse
    from lwaftr.cli.main import build_parser
    subs = list(_subcommands(build_parser()))
    assert len(subs) >= 20
    for path, parser in subs:
        for a in parser._actions:
            hidden = a.help == argparse.SUPPRESS          # only lwaftr run's supervisor-set options
            assert a.help and (not hidden or a.dest in ("worker", "instance_index")), \
                f"lwaftr {' '.join(path)}: {a.dest} has no help"
        assert parser.epilog and parser.epilog.startswith("examples:\n"), f"lwaftr {' '.join(path)}: no example"
        for line in parser.epilog.splitlines()[1:]:
            assert line.strip().startswith("lwaftr "), (path, line)


def test_help_is_printed_with_its_examples():
    r = lwaftr("generate-configuration", "-h")
    assert r.returncode == 0
    for arg in ("IPV4", "NUM_IPS", "BR_ADDRESS", "B4_IPV6", "PSID_LENGTH", "SHIFT"):
        line = next(l for l in r.stdout.splitlines() if l.strip().startswith(arg + " "))
        assert len(line.split()) > 1, line            # words after the name
    assert "\nexamples:\n  lwaftr generate-configuration 193.5.1.100 15874 " in r.stdout
