# syntax=docker/dockerfile:1
# lwaftr: an RFC 7596 lwAFTR.  How to build and run: docs/container.md.
#
#   docker build -t lwaftr .
#   docker run --network host --cap-add NET_ADMIN --cap-add NET_RAW --device /dev/net/tun \
#       -v /etc/lwaftr:/etc/lwaftr lwaftr /etc/lwaftr/lwaftr.conf eth0,eth1

# --- build: wheels for the project and its (locked) dependencies --------------------------------------
# The libyang Python binding (CFFI) compiles against Debian's libyang2-dev; every
# other dependency comes as a manylinux wheel.
FROM python:3.11-slim-bookworm AS build

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        gcc libc6-dev libyang2-dev \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY pyproject.toml README.md requirements.lock ./
COPY scripts/lock-subset.sh ./scripts/lock-subset.sh
COPY src ./src
# Exactly the versions of requirements.lock, checked against its hashes (as
# scripts/setup.sh does); libyang's build tools first, from the same lock.
RUN sh scripts/lock-subset.sh setuptools wheel cffi pycparser > /tmp/build-tools.lock \
 && pip install --no-cache-dir --require-hashes --no-deps -r /tmp/build-tools.lock \
 && pip wheel --no-cache-dir --wheel-dir /wheels --require-hashes --no-deps --no-build-isolation \
        -r requirements.lock \
 && pip wheel --no-cache-dir --wheel-dir /wheels --no-deps --no-build-isolation .

# --- run --------------------------------------------------------------------------------------
FROM python:3.11-slim-bookworm

# libyang2: the configuration layer (RFC 8676 YANG); libpcap0.8: pcap filters
# (and tcpdump); libxdp1, libbpf1: AF_XDP (LWAFTR_IO=xdp); iproute2, ethtool:
# the entry point and operators; tcpdump: watching `lwaftr monitor` TAPs;
# bird2: BGP/OSPF on the control-plane TAPs; snmpd: the master agent of the
# SNMP subagent (`lwaftr run --snmp-agentx`); nftables, iputils-ping, procps:
# the namespace lab of `lwaftr demo`.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        libyang2 libpcap0.8 libxdp1 libbpf1 iproute2 ethtool tcpdump bird2 snmpd \
        nftables iputils-ping procps \
 && rm -rf /var/lib/apt/lists/*

# The project (no test extras) in a virtualenv of its own.
COPY --from=build /wheels /tmp/wheels
RUN python -m venv /opt/lwaftr \
 && /opt/lwaftr/bin/pip install --no-cache-dir --no-index --find-links /tmp/wheels lwaftr \
 && rm -rf /tmp/wheels

# numba's cache: compiled here, loaded at run time.  The cache is keyed by
# CPU: "generic" code runs on any x86-64 CPU (a few per cent slower than
# host-tuned code, docs/container.md); build with
# --build-arg NUMBA_CPU_NAME=<llvm cpu, e.g. znver4> for one CPU model.
ARG NUMBA_CPU_NAME=generic
ENV PATH=/opt/lwaftr/bin:$PATH \
    NUMBA_CACHE_DIR=/var/cache/lwaftr/numba \
    NUMBA_CPU_NAME=${NUMBA_CPU_NAME} \
    LWAFTR_RUN_DIR=/run/lwaftr \
    PYTHONUNBUFFERED=1
COPY docker/prime.py /opt/lwaftr/prime.py
RUN python /opt/lwaftr/prime.py \
 && test -n "$(find "$NUMBA_CACHE_DIR" -name '*.nbi' -print -quit)"

COPY docker/entrypoint.sh /usr/local/bin/lwaftr-entrypoint
RUN chmod 0755 /usr/local/bin/lwaftr-entrypoint

WORKDIR /etc/lwaftr
# Runs as root: lwaftr run needs CAP_NET_ADMIN and CAP_NET_RAW (and for AF_XDP
# CAP_BPF or CAP_SYS_ADMIN, CAP_IPC_LOCK); docker run grants only what --cap-add names.
USER root
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=8s --start-period=60s --retries=3 \
    CMD ["/usr/local/bin/lwaftr-entrypoint", "health"]
ENTRYPOINT ["/usr/local/bin/lwaftr-entrypoint"]
CMD ["/etc/lwaftr/lwaftr.conf"]
