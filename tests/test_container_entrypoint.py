"""The container image's entry point (``docker/entrypoint.sh``), run directly, and
static checks of ``Dockerfile`` so that it cannot silently rot.

There is no container engine where these tests run: the image is never built
here.  What the image does at run time is the entry point, so it is tested as
the image runs it: argument and environment validation, the ``lwaftr run``
command line it builds (``LWAFTR_DRY_RUN=1`` prints it; it is then parsed with
lwaftr's own parser), passthrough to other subcommands, the health check, and
one real run in network namespaces made here: the kernels primed by
``docker/prime.py`` (the build step) into a fresh numba cache, the embedded
example configuration on a veth pair, traffic forwarded, SIGTERM, exit 0.
Most of it needs root (namespaces, capabilities): skipped otherwise.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import pytest

from lwaftr.config.snabb import dump_snabb
from lwaftr.examples import example_config

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "docker" / "entrypoint.sh"
PRIME = ROOT / "docker" / "prime.py"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
BIN = Path(sys.executable).parent                 # the lwaftr under test: beside this interpreter
NS = f"lwaftr-ctr-{os.getpid()}"

ROOTED = os.geteuid() == 0 and shutil.which("ip") is not None
needs_root = pytest.mark.skipif(not ROOTED, reason="needs root and iproute2 (namespaces, capabilities)")

if not (BIN / "lwaftr").exists():
    pytest.skip(f"no lwaftr script beside {sys.executable}", allow_module_level=True)


# --- helpers ------------------------------------------------------------------------------------

def env_for(tmp: Path, **kw: str) -> dict[str, str]:
    """The test's environment without any LWAFTR_* setting, lwaftr on PATH, its own run dir."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LWAFTR_")}
    env["PATH"] = f"{BIN}:{env.get('PATH', '/usr/bin:/bin')}"
    env["LWAFTR_RUN_DIR"] = str(tmp / "run")
    env.update(kw)
    return env


def entry(*args: str, env: dict[str, str], ns: str | None = None, wrap: tuple[str, ...] = (),
          timeout: float = 120) -> subprocess.CompletedProcess:
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(wrap) + [str(SCRIPT), *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def dry(*args: str, env: dict[str, str], ns: str | None = None) -> list[str]:
    """The ``lwaftr run`` command line the entry point would exec."""
    r = entry(*args, env=dict(env, LWAFTR_DRY_RUN="1"), ns=ns)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1, r.stdout
    return shlex.split(lines[0])


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=60)


def write_config(path: Path, instances: list[tuple[str | None, str]]) -> Path:
    """The embedded example with instances on (external device or None, device)."""
    cfg = example_config()
    base = cfg.instances[0]
    insts = [replace(base, external_device=ext, device=dev, queue_id=q) for q, (ext, dev) in enumerate(instances)]
    path.write_text(dump_snabb(replace(cfg, instances=insts)))
    return path


def run_parser_choices() -> dict[str, list[str]]:
    """``lwaftr run``'s choices for the options the entry point takes from the environment."""
    from lwaftr.cli.main import build_parser
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    run = sub.choices["run"]
    return {a.dest: list(a.choices) for a in run._actions if a.choices and a.dest != "help"}


def parse_run(cmd: list[str]):
    from lwaftr.cli.main import build_parser
    assert cmd[:2] == ["lwaftr", "run"], cmd
    return build_parser().parse_args(cmd[1:])


# --- the Dockerfile, statically -----------------------------------------------------------------

def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuations joined and comments dropped."""
    out, buf = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        s = line.strip()
        if not buf and (not s or s.startswith("#")):
            continue
        if s.startswith("#"):
            continue
        if s.endswith("\\"):
            buf += s[:-1] + " "
            continue
        buf += s
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    assert not buf, "Dockerfile ends in a continuation"
    return out


def stages() -> list[list[tuple[str, str]]]:
    st: list[list[tuple[str, str]]] = []
    for ins, rest in dockerfile():
        if ins == "FROM":
            st.append([])
        if ins not in ("ARG",) or st:
            assert st, f"{ins} before the first FROM"
            st[-1].append((ins, rest))
    return st


def apt_packages(stage: list[tuple[str, str]]) -> list[str]:
    pkgs = []
    for ins, rest in stage:
        if ins == "RUN" and "apt-get install" in rest:
            for part in rest.split("&&"):
                words = part.split()
                if "install" in words and "apt-get" in words:
                    pkgs += [w for w in words[words.index("install") + 1:] if not w.startswith("-")]
    return pkgs


def test_dockerfile_base_images_are_debian_bookworm_with_a_python_the_project_accepts():
    from packaging.specifiers import SpecifierSet
    import tomllib
    requires = SpecifierSet(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"])
    froms = [rest for ins, rest in dockerfile() if ins == "FROM"]
    assert len(froms) == 2, froms                  # a build stage and the image
    for f in froms:
        image = f.split()[0]
        m = re.fullmatch(r"(?:docker\.io/(?:library/)?)?(python|debian):(.+)", image)
        assert m and "bookworm" in m.group(2), f"not a Debian bookworm image: {image}"
        if m.group(1) == "python":
            assert re.match(r"\d+\.\d+", m.group(2)).group(0) in requires, image


def test_dockerfile_entrypoint_is_the_script_and_healthcheck_uses_it():
    final = stages()[-1]
    copies = {}
    for ins, rest in final:
        if ins == "COPY" and not rest.startswith("--from"):
            *src, dest = rest.split()
            for s in src:
                copies[s] = dest
    dest = copies.get("docker/entrypoint.sh")
    assert dest, "docker/entrypoint.sh is not copied into the image"
    [entrypoint] = [json.loads(rest) for ins, rest in final if ins == "ENTRYPOINT"]
    assert entrypoint == [dest], "ENTRYPOINT must be the script, exec form (signals reach lwaftr)"
    [health] = [rest for ins, rest in final if ins == "HEALTHCHECK"]
    cmd = json.loads(health[health.index("CMD") + 3:].strip())
    assert cmd == [dest, "health"]
    [cmd_default] = [json.loads(rest) for ins, rest in final if ins == "CMD"]
    assert cmd_default and cmd_default[0].endswith(".conf")
    users = [rest for ins, rest in final if ins == "USER"]
    assert all(u in ("root", "0", "0:0") for u in users), users
    assert os.access(SCRIPT, os.X_OK)


def test_dockerfile_installs_without_test_extras_and_primes_numba_into_the_image():
    final = stages()[-1]
    runs = [rest for ins, rest in final if ins == "RUN"]
    pip = [r for r in runs if "pip install" in r]
    assert pip and not any("[test]" in r or "test]" in r for r in pip), pip
    envs = " ".join(rest for ins, rest in final if ins == "ENV")
    assert re.search(r"NUMBA_CACHE_DIR=/\S+", envs), "NUMBA_CACHE_DIR must be set in the image (build and run)"
    assert "NUMBA_CPU_NAME=" in envs
    order = [(ins, rest) for ins, rest in final if ins in ("ENV", "RUN")]
    prime = next(i for i, (ins, rest) in enumerate(order) if ins == "RUN" and "prime.py" in rest)
    env_at = next(i for i, (ins, rest) in enumerate(order) if ins == "ENV" and "NUMBA_CACHE_DIR" in rest)
    assert env_at < prime, "the cache directory must be set before the kernels are compiled"
    assert "docker/prime.py" in " ".join(rest for ins, rest in final if ins == "COPY")


def test_dockerfile_packages_split_between_build_and_run_stages():
    build, final = stages()
    run_pkgs, build_pkgs = apt_packages(final), apt_packages(build)
    for p in ("libyang2", "libpcap0.8", "libxdp1", "libbpf1", "iproute2", "ethtool", "tcpdump", "bird2"):
        assert p in run_pkgs, p
    assert "libyang2-dev" in build_pkgs and "gcc" in build_pkgs
    assert not [p for p in run_pkgs if p.endswith("-dev") or p in ("gcc", "build-essential")], run_pkgs


@pytest.mark.skipif(shutil.which("apt-cache") is None, reason="no apt-cache")
def test_dockerfile_packages_exist_in_debian_bookworm():
    osr = Path("/etc/os-release").read_text() if Path("/etc/os-release").exists() else ""
    if "VERSION_CODENAME=bookworm" not in osr:
        pytest.skip("not a Debian bookworm host: its package lists would not tell")
    pkgs = sorted(set(apt_packages(stages()[0]) + apt_packages(stages()[1])))
    assert len(pkgs) > 10
    missing = []
    for p in pkgs:
        out = sh("apt-cache", "policy", p).stdout
        m = re.search(r"Candidate:\s*(\S+)", out)
        if not m or m.group(1) == "(none)":
            missing.append(p)
    assert not missing, f"not in this host's bookworm package lists: {missing}"


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore: a path is out if the last pattern matching it or a parent says so."""
    def rx(p: str) -> re.Pattern:
        out, i = "", 0
        while i < len(p):
            if p.startswith("**/", i):
                out, i = out + "(?:.*/)?", i + 3
            elif p.startswith("**", i):
                out, i = out + ".*", i + 2
            elif p[i] == "*":
                out, i = out + "[^/]*", i + 1
            elif p[i] == "?":
                out, i = out + "[^/]", i + 1
            else:
                out, i = out + re.escape(p[i]), i + 1
        return re.compile(out)
    parts = path.split("/")
    prefixes = ["/".join(parts[:k]) for k in range(1, len(parts) + 1)]
    out = False
    for pat in patterns:
        neg = pat.startswith("!")
        r = rx(pat.lstrip("!").strip("/"))
        if any(r.fullmatch(p) for p in prefixes):
            out = not neg
    return out


def test_dockerfile_copies_exist_and_are_not_dockerignored():
    patterns = [ln.strip() for ln in DOCKERIGNORE.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    stage_names = {rest.split()[-1] for ins, rest in dockerfile() if ins == "FROM" and " AS " in rest.upper()}
    needed = ["pyproject.toml", "README.md", "src/lwaftr/__init__.py", "src/lwaftr/cli/main.py",
              "docker/entrypoint.sh", "docker/prime.py", "requirements.lock",
              "scripts/lock-subset.sh"]
    needed += [str(p.relative_to(ROOT)) for p in (ROOT / "src/lwaftr/config/yang").glob("*.yang")]
    for ins, rest in dockerfile():
        if ins != "COPY":
            continue
        words = rest.split()
        if words[0].startswith("--from="):
            assert words[0].split("=", 1)[1] in stage_names, rest
            continue
        for src in words[:-1]:
            assert (ROOT / src).exists(), f"COPY {src}: not in the repository"
            needed.append(src)
    for n in needed:
        assert not _ignored(n, patterns), f"{n} is needed by the build but .dockerignore leaves it out"
    for n in (".venv/bin/python", ".git/HEAD", "src/lwaftr/__pycache__/x.nbi", "tests/test_e2e.py"):
        assert _ignored(n, patterns), f"{n} should stay out of the build context"


@pytest.mark.parametrize("name", ["missing.conf", "/etc/lwaftr-test-none/lwaftr.conf"])
def test_missing_configuration(tmp_path, name):
    r = entry(name, "eth0,eth1", env=env_for(tmp_path))
    assert r.returncode == 2
    assert f"configuration file {name} does not exist" in r.stderr


def test_configuration_is_a_directory(tmp_path):
    r = entry(str(tmp_path), "eth0", env=env_for(tmp_path))
    assert r.returncode == 2 and f"{tmp_path} is a directory" in r.stderr


def test_unreadable_configuration(tmp_path):
    conf = write_config(tmp_path / "lw.conf", [(None, "lo")])
    conf.chmod(0)
    wrap: tuple[str, ...] = ()
    if os.geteuid() == 0:                          # root reads anything: drop the capabilities that let it
        if shutil.which("setpriv") is None:
            pytest.skip("no setpriv to drop CAP_DAC_OVERRIDE")
        wrap = ("setpriv", "--bounding-set", "-dac_override,-dac_read_search")
    r = entry(str(conf), "lo", env=env_for(tmp_path), wrap=wrap)
    assert r.returncode == 2, r.stderr
    assert f"configuration file {conf} is not readable" in r.stderr


def test_configuration_that_does_not_load(tmp_path):
    conf = tmp_path / "bad.conf"
    conf.write_text("softwire-config { nonsense; }\n")
    r = entry(str(conf), "lo", env=env_for(tmp_path))
    assert r.returncode == 2
    assert f"configuration {conf} does not load" in r.stderr


@pytest.mark.parametrize("spec", ["eth0,", ",eth1", "a,b,c", "x" * 16, "a/b", "eth0,has space"])
def test_malformed_interface_argument(tmp_path, spec):
    conf = write_config(tmp_path / "lw.conf", [(None, "lo")])
    r = entry(str(conf), "lo", spec, env=env_for(tmp_path))
    assert r.returncode == 2
    assert f"instance 1: '{spec}'" in r.stderr


@pytest.mark.parametrize("var,value", [("LWAFTR_IO", "dpdk"), ("LWAFTR_LOG_FORMAT", "xml"),
                                       ("LWAFTR_LOG_LEVEL", "loud"), ("LWAFTR_CONTROL_PLANE", "none"),
                                       ("LWAFTR_BATCH", "0"), ("LWAFTR_WAIT_INTERFACES", "soon")])
def test_bad_environment_value(tmp_path, var, value):
    conf = write_config(tmp_path / "lw.conf", [(None, "lo")])
    r = entry(str(conf), "lo", env=env_for(tmp_path, **{var: value}))
    assert r.returncode == 2
    assert f"{var}={value}" in r.stderr


def test_more_interface_arguments_than_instances(tmp_path):
    conf = write_config(tmp_path / "lw.conf", [(None, "lo")])
    r = entry(str(conf), "lo", "lo", env=env_for(tmp_path))
    assert r.returncode == 2 and "2 interface arguments" in r.stderr and "1 instance" in r.stderr


def test_interface_that_does_not_exist(tmp_path):
    conf = write_config(tmp_path / "lw.conf", [(None, "lo"), (None, "lo")])
    r = entry(str(conf), "lo", "lwnope0,lo", env=env_for(tmp_path))
    assert r.returncode == 2
    assert "interface lwnope0 (instance 1, IPv4 side) does not exist" in r.stderr
    assert "present here:" in r.stderr and " lo " in r.stderr + " "
    # No interface arguments: the devices of the configuration are checked.
    conf = write_config(tmp_path / "lw2.conf", [("lwnope1", "lwnope2")])
    r = entry(str(conf), env=env_for(tmp_path))
    assert r.returncode == 2
    assert f"interface lwnope1 (instance 0, IPv4 side, from {conf}) does not exist" in r.stderr
    assert f"interface lwnope2 (instance 0, IPv6 side, from {conf}) does not exist" in r.stderr


def test_waits_for_a_missing_interface_when_asked(tmp_path):
    conf = write_config(tmp_path / "lw.conf", [(None, "lo")])
    t = time.monotonic()
    r = entry(str(conf), "lwnope0", env=env_for(tmp_path, LWAFTR_WAIT_INTERFACES="2"))
    assert r.returncode == 2 and "lwnope0" in r.stderr
    assert time.monotonic() - t >= 2


def test_passthrough_to_other_subcommands(tmp_path):
    env = env_for(tmp_path)
    r = entry("counters", env=env)
    assert r.returncode == 1 and "lwaftr counters: no lwaftr instance is running" in r.stderr
    r = entry("demo", "--offline", env=env)
    assert r.returncode == 0, r.stderr
    assert "out-ipv6-packets" in r.stdout
    r = entry("no-such-command", env=env)
    assert r.returncode == 2 and "invalid choice" in r.stderr


def test_health_without_an_instance(tmp_path):
    r = entry("health", env=env_for(tmp_path))
    assert r.returncode == 1 and "unhealthy" in r.stdout
    r = entry("health", "nosuch", env=env_for(tmp_path))
    assert r.returncode == 1 and "nosuch" in r.stdout


# --- the command line built (root: capabilities and /dev/net/tun are checked) -----------------

@pytest.fixture(scope="module")
def netns():
    """Namespace NS with veth pairs i1-i0 and b1-b0, nothing else."""
    if not ROOTED:
        pytest.skip("needs root and iproute2")
    sh("ip", "netns", "add", NS)
    try:
        for a, b in (("i1", "i0"), ("b1", "b0")):
            sh("ip", "-n", NS, "link", "add", a, "type", "veth", "peer", "name", b)
        for d in ("i1", "i0", "b1", "b0"):
            sh("ip", "netns", "exec", NS, "sysctl", "-qw", f"net.ipv6.conf.{d}.disable_ipv6=1")
            sh("ip", "-n", NS, "link", "set", d, "up")
        sh("ip", "netns", "exec", NS, "ethtool", "-K", "i0", "tx", "off", check=False)
        yield NS
    finally:
        sh("ip", "netns", "del", NS, check=False)


def test_command_line_pair_and_stick(netns, tmp_path):
    conf = write_config(tmp_path / "lw.conf", [("i1", "b1"), (None, "i0")])
    cmd = dry(str(conf), "i1,b1", "i0", env=env_for(tmp_path), ns=netns)
    assert cmd == ["lwaftr", "run", "--conf", str(conf), "--instance", "i1,b1", "--instance", "i0"]
    args = parse_run(cmd)
    assert args.conf == str(conf) and args.instance == ["i1,b1", "i0"] and not args.v4 and not args.on_a_stick
    # The binding table was compiled beside the configuration, as lwaftr run will map it.
    from lwaftr.bindingtable.compiled import compiled_path, is_fresh
    assert is_fresh(conf, compiled_path(conf))
    # Fewer arguments than instances: the first ones.
    assert dry(str(conf), "i1,b1", env=env_for(tmp_path), ns=netns)[-2:] == ["--instance", "i1,b1"]


def test_command_line_without_interfaces_uses_the_configuration(netns, tmp_path):
    conf = write_config(tmp_path / "lw.conf", [("i1", "b1")])
    cmd = dry(str(conf), env=env_for(tmp_path), ns=netns)
    assert cmd == ["lwaftr", "run", "--conf", str(conf)]


def test_command_line_options_from_environment_and_arguments(netns, tmp_path):
    conf = write_config(tmp_path / "lw.conf", [("i1", "b1")])
    env = env_for(tmp_path, LWAFTR_NAME="edge 1", LWAFTR_IO="xdp", LWAFTR_LOG_FORMAT="json",
                  LWAFTR_LOG_LEVEL="warning", LWAFTR_CONTROL_PLANE="built-in", LWAFTR_BATCH="64",
                  LWAFTR_RUN_ARGS="--batch 128")
    cmd = dry(str(conf), "i1,b1", "--log-level", "debug", env=env, ns=netns)
    assert cmd == ["lwaftr", "run", "--conf", str(conf), "--instance", "i1,b1", "--name", "edge 1",
                   "--io", "xdp", "--control-plane", "built-in", "--log-level", "warning",
                   "--log-format", "json", "--batch", "64", "--batch", "128", "--log-level", "debug"]
    args = parse_run(cmd)                          # the last one wins: arguments, then LWAFTR_RUN_ARGS
    assert (args.name, args.io, args.control_plane, args.log_format, args.log_level, args.batch) == \
        ("edge 1", "xdp", "built-in", "json", "debug", 128)
    # "run" spelled out, and "--" before the options.
    assert dry("run", str(conf), "i1,b1", "--", "--batch", "32", env=env_for(tmp_path), ns=netns)[-2:] == \
        ["--batch", "32"]


def test_environment_choices_match_lwaftr_run(netns, tmp_path):
    """Every choice lwaftr run accepts is accepted and passed on (the script's lists cannot drift)."""
    conf = write_config(tmp_path / "lw.conf", [("i1", "b1")])
    var = {"io": "LWAFTR_IO", "log_format": "LWAFTR_LOG_FORMAT", "log_level": "LWAFTR_LOG_LEVEL",
           "control_plane": "LWAFTR_CONTROL_PLANE"}
    choices = run_parser_choices()
    assert set(var) <= set(choices), choices
    for dest, name in var.items():
        for value in choices[dest]:
            args = parse_run(dry(str(conf), "i1,b1", env=env_for(tmp_path, **{name: value}), ns=netns))
            assert getattr(args, dest) == value


def test_interface_down_or_not_ethernet(netns, tmp_path):
    """lwaftr run's own interface check, before anything is touched: one line, exit 2."""
    conf = write_config(tmp_path / "lw.conf", [("i1", "b1")])
    sh("ip", "-n", netns, "link", "add", "lwdown0", "type", "veth", "peer", "name", "lwdown1")   # Ethernet, down
    try:
        r = entry(str(conf), "i1,lwdown0", env=env_for(tmp_path, LWAFTR_DRY_RUN="1"), ns=netns)
        assert (r.returncode, r.stderr) == (2, "lwaftr-entrypoint: interface lwdown0 (instance 0, IPv6 side): "
                                               "is down (ip link set lwdown0 up)\n")
    finally:
        sh("ip", "-n", netns, "link", "del", "lwdown0", check=False)
    r = entry(str(conf), "lo", env=env_for(tmp_path, LWAFTR_DRY_RUN="1"), ns=netns)
    assert (r.returncode, r.stderr) == (2, "lwaftr-entrypoint: interface lo (instance 0, on a stick): "
                                           "is a loopback interface, not Ethernet\n")


@needs_root
def test_missing_capabilities(netns, tmp_path):
    if shutil.which("setpriv") is None:
        pytest.skip("no setpriv")
    conf = write_config(tmp_path / "lw.conf", [("i1", "b1")])
    r = entry(str(conf), "i1,b1", env=env_for(tmp_path), ns=netns,
              wrap=("setpriv", "--bounding-set", "-net_admin"))
    assert r.returncode == 2
    assert "missing: NET_ADMIN" in r.stderr and "--cap-add NET_ADMIN" in r.stderr


@needs_root
def test_missing_tun_device_and_read_only_proc_sys(netns, tmp_path):
    """As in a container without --device /dev/net/tun and with Docker's read-only /proc/sys."""
    if shutil.which("unshare") is None:
        pytest.skip("no unshare")
    conf = write_config(tmp_path / "lw.conf", [("i1", "b1")])
    hide = ("unshare", "--mount", "--propagation", "private", "sh", "-c",
            'mount -t tmpfs none /dev/net && mount --bind /proc/sys /proc/sys '
            '&& mount -o remount,bind,ro /proc/sys && exec "$@"', "sh")
    env = env_for(tmp_path, LWAFTR_DRY_RUN="1")
    r = entry(str(conf), "i1,b1", env=env, ns=netns, wrap=hide)
    assert r.returncode == 2
    assert "/dev/net/tun" in r.stderr and "--device /dev/net/tun" in r.stderr
    # The built-in control plane needs no TAP; the read-only /proc/sys is reported.
    r = entry(str(conf), "i1,b1", env=dict(env, LWAFTR_CONTROL_PLANE="built-in"), ns=netns, wrap=hide)
    assert r.returncode == 0, r.stderr
    assert "/proc/sys is read-only" in r.stderr and "systempaths=unconfined" in r.stderr


@needs_root
def test_af_xdp_without_cap_sys_admin_is_reported(netns, tmp_path):
    """libxdp needs CAP_SYS_ADMIN (CAP_BPF alone is refused program and BTF lookups): said
    before starting; lwaftr run then falls back to AF_PACKET by itself."""
    if shutil.which("setpriv") is None:
        pytest.skip("no setpriv")
    conf = write_config(tmp_path / "lw.conf", [("i1", "b1")])
    r = entry(str(conf), "i1,b1", env=env_for(tmp_path, LWAFTR_IO="xdp", LWAFTR_DRY_RUN="1"), ns=netns,
              wrap=("setpriv", "--bounding-set", "-sys_admin"))
    assert r.returncode == 0, r.stderr
    assert "would mount bpffs on /sys/fs/bpf" in r.stderr
    assert "needs CAP_SYS_ADMIN" in r.stderr and "CAP_BPF is not enough" in r.stderr
    assert "--io xdp" in r.stdout


# --- a real run --------------------------------------------------------------------------------

SEND = textwrap.dedent('''
    import socket, sys, time
    from lwaftr.examples import example_traffic
    frames = [f for _, side, f in example_traffic() if side == "v4"]
    tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
    tx.bind(("i0", 3))
    rx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x86DD))
    rx.bind(("b0", 0x86DD))
    rx.settimeout(0.2)
    seen, deadline = 0, time.time() + 30
    while not seen and time.time() < deadline:
        for f in frames:
            tx.send(f)
        try:
            while True:
                data, addr = rx.recvfrom(65535)
                if addr[2] != socket.PACKET_OUTGOING and data[20] == 4:   # IPv6 next header: IPv4
                    seen += 1
        except socket.timeout:
            pass
    print(seen)
''')


@pytest.fixture(scope="module")
def primed(tmp_path_factory):
    """A numba cache filled by the image's build step (docker/prime.py), and its files."""
    if not ROOTED:
        pytest.skip("needs root and iproute2")
    cache = tmp_path_factory.mktemp("numba")
    env = {"NUMBA_CACHE_DIR": str(cache), "NUMBA_CPU_NAME": "generic"}
    r = subprocess.run([sys.executable, str(PRIME)], env=env_for(cache, **env), capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    files = cache_files(cache)
    assert any("afpacket.rx_burst" in f for f in files), r.stderr
    return env, files


def cache_files(cache: Path) -> set[str]:
    return {str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file()}


# The graph's stages.  Each is compiled once by the build step: numba compiles a function
# again for each new type of argument, and a literal (``f(x, 0)``) or a read-only table
# is a new type; the build took 3.4 times as long before these were found.
STAGES = ("batch.run_batch", "kernels.fast_batch", "kernels.classify_inet", "kernels.classify_b4",
          "kernels.apply_inet", "kernels.apply_b4", "defrag.defrag_batch", "frag4.fragment4",
          "kernels._fragment6", "control.classify4", "control.classify6", "control.apply4", "control.apply6",
          "control.request")


@needs_root
def test_the_build_step_compiles_each_stage_once(primed):
    _, files = primed
    for stage in STAGES:
        compiled = sorted(f for f in files if re.search(rf"/{re.escape(stage)}-\d+\.py\d+\.\d+\.nbc$", f))
        assert len(compiled) == 1, (stage, compiled)


@needs_root
@pytest.mark.parametrize("io", ["afpacket", "xdp"])
def test_real_run_forwards_and_stops_on_sigterm(netns, primed, tmp_path, io):
    numba_env, primed_files = primed
    conf = write_config(tmp_path / "lwaftr.conf", [("i1", "b1")])
    name = f"ctr{os.getpid()}"
    env = env_for(tmp_path, LWAFTR_NAME=name, LWAFTR_LOG_FORMAT="json", LWAFTR_IO=io, **numba_env)
    proc = subprocess.Popen(["ip", "netns", "exec", netns, str(SCRIPT), str(conf), "i1,b1"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 90
        while True:
            assert proc.poll() is None, proc.communicate()
            h = entry("health", env=env, ns=netns)
            if h.returncode == 0:
                break
            assert time.time() < deadline, f"not healthy: {h.stdout}{h.stderr}"
            time.sleep(0.3)
        assert h.stdout.startswith(f"healthy: {name}")
        # exec: the process started is lwaftr run itself, so docker's signals reach it.
        argv = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
        assert b"run" in argv and any(a.endswith(b"lwaftr") for a in argv), argv

        sent = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", SEND], env=env,
                              capture_output=True, text=True, timeout=60)
        assert sent.returncode == 0, sent.stderr
        assert int(sent.stdout) >= 1, "nothing encapsulated came out of b1"

        c = entry("counters", name, "--json", env=env, ns=netns)
        assert c.returncode == 0, c.stderr
        counters = json.loads(c.stdout)
        assert counters.get("in-ipv4-packets", 0) >= 1 and counters.get("out-ipv6-packets", 0) >= 1, counters

        t = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        stopped_in = time.monotonic() - t
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert stopped_in < 10, f"stopping took {stopped_in:.1f} s (docker stop waits 10 s by default)"
    totals = json.loads(out)
    assert totals["out-ipv6-packets"] >= 1
    logs = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert any("ready" in rec["msg"] for rec in logs), err
    # The entry point mounted bpffs for AF_XDP (ip netns exec gives a /sys without it).
    assert any(f"i1 (af_{'xdp' if io == 'xdp' else 'packet'})" in rec["msg"] for rec in logs), err
    links = sh("ip", "-n", netns, "-d", "link", "show").stdout
    assert "cp-i1" not in links and "cp-b1" not in links, "TAPs left behind"
    assert " xdp" not in links, "an XDP program left attached"
    # Nothing was compiled at start or while forwarding but AF_XDP's kernels (which need an
    # XDP socket): the build step primed everything else.
    new = sorted(cache_files(Path(numba_env["NUMBA_CACHE_DIR"])) - primed_files)
    assert all("afxdp" in f for f in new) if io == "xdp" else not new, (
        "kernels compiled at run time, not by docker/prime.py (the image would compile them at every "
        f"container start): {new}")
