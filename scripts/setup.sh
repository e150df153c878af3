#!/usr/bin/env bash
# One-time setup on a fresh Debian machine: system packages, a virtualenv with
# the project and its test dependencies, and a primed numba cache.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBS="libpcap0.8 libpcap0.8-dev tcpdump iproute2 ethtool nftables iputils-ping libxdp1 libbpf1 libyang2-dev gcc bird2 snmpd snmp snmptrapd smitools"
missing=""
for d in $DEBS; do dpkg -s "$d" >/dev/null 2>&1 || missing="$missing $d"; done
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  else
    echo "setup: please install:$missing (sudo apt-get install$missing)" >&2
    exit 1
  fi
fi

# Python packages: exactly what requirements.lock names, checked against its
# hashes (refresh it with scripts/lock.sh).  libyang is the one source
# distribution (it compiles against Debian's libyang2-dev): its build tools
# come from the lock too, installed first, and nothing is built in an
# unpinned isolated environment.
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=(.venv/bin/pip install -q --disable-pip-version-check --require-hashes --no-deps)
sh scripts/lock-subset.sh setuptools wheel cffi pycparser > .venv/build-tools.lock
"${PIP[@]}" -r .venv/build-tools.lock
"${PIP[@]}" --no-build-isolation -r requirements.lock
.venv/bin/pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
.venv/bin/pip check
# Compile the numba kernels once so the first run starts fast.
.venv/bin/python docker/prime.py   # the engine, ring and checksum kernels (the rings need CAP_NET_RAW)
touch .venv/.lwaftr-setup
