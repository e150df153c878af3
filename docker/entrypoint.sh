#!/bin/bash
# Entry point of the lwaftr container image (see docs/container.md).
#
#   lwaftr-entrypoint [run] CONF [IFACES...] [--OPTION ...]
#       Forward: instance i of CONF on IFACES[i], "V4IF,V6IF" (two interfaces)
#       or "IFACE" (on a stick); no IFACES: the devices CONF names.  Validates
#       the arguments, compiles the binding table if needed, then execs
#       `lwaftr run --conf CONF --instance ...` (lwaftr becomes this process:
#       SIGTERM stops it cleanly, SIGHUP reloads).  Options from the first
#       argument starting with "-" on are given to `lwaftr run` as they are.
#   lwaftr-entrypoint health [NAME]
#       Exit 0 when the running instance answers on its control socket and
#       every worker is ready (the image's HEALTHCHECK).
#   lwaftr-entrypoint COMMAND [ARGS...]
#       Any other lwaftr subcommand (demo, check, counters, bench, ...).
#
# Environment: LWAFTR_NAME, LWAFTR_IO (afpacket|xdp), LWAFTR_CONTROL_PLANE
# (kernel|built-in), LWAFTR_LOG_LEVEL, LWAFTR_LOG_FORMAT (text|json|syslog),
# LWAFTR_BATCH, LWAFTR_RUN_ARGS (more `lwaftr run` options, split on blanks),
# LWAFTR_WAIT_INTERFACES (seconds to wait for missing interfaces, default 0),
# LWAFTR_DRY_RUN=1 (print the `lwaftr run` command line instead of running it).
#
# Exit status (before lwaftr takes over): 2 for bad arguments, configuration,
# interfaces (missing, down, not Ethernet), privileges or devices; 1 when
# lwaftr itself is missing or the instance is unhealthy (health).
set -uo pipefail

PROG=lwaftr-entrypoint
CAP_NET_ADMIN=12 CAP_NET_RAW=13 CAP_IPC_LOCK=14 CAP_SYS_ADMIN=21 CAP_BPF=39   # <linux/capability.h>
BPFFS=/sys/fs/bpf

usage() {
    cat <<EOF
usage: $PROG [run] CONF [IFACES...] [--lwaftr-run-option ...]
       $PROG health [NAME]
       $PROG COMMAND [ARGS...]        (any lwaftr subcommand: demo, check, counters, ...)

  CONF     the lwAFTR configuration (snabb-softwire-v3, or RFC 8676 XML/JSON)
  IFACES   one per instance of CONF, in order: V4IF,V6IF (two interfaces) or
           IFACE (one interface, on a stick); none: the devices CONF names

  e.g. $PROG /etc/lwaftr/lwaftr.conf eth0,eth1 eth2
       (instance 0 on eth0 (IPv4) and eth1 (IPv6), instance 1 on a stick on eth2)

Environment: LWAFTR_NAME, LWAFTR_IO=afpacket|xdp, LWAFTR_CONTROL_PLANE=kernel|built-in,
LWAFTR_LOG_LEVEL, LWAFTR_LOG_FORMAT=text|json|syslog, LWAFTR_BATCH, LWAFTR_RUN_ARGS,
LWAFTR_WAIT_INTERFACES=SECONDS, LWAFTR_DRY_RUN=1.  lwaftr's own help: $PROG --help-lwaftr
EOF
}

die() {
    local code=$1
    shift
    printf '%s: %s\n' "$PROG" "$*" >&2
    exit "$code"
}

note() {
    printf '%s: %s\n' "$PROG" "$*" >&2
}

lwaftr_bin() {
    command -v lwaftr || die 1 "lwaftr is not on PATH ($PATH)"
}

# The interpreter lwaftr runs under (its script's #! line), for the few steps
# done in Python; LWAFTR_PYTHON overrides.
lwaftr_python() {
    if [ -n "${LWAFTR_PYTHON:-}" ]; then
        printf '%s\n' "$LWAFTR_PYTHON"
        return
    fi
    local bin line=""
    bin=$(lwaftr_bin) || exit 1
    IFS= read -r line <"$bin" || true
    line=${line#\#!}
    if [ -n "$line" ] && [ -x "$line" ]; then
        printf '%s\n' "$line"
    else
        printf 'python3\n'
    fi
}

# has_cap BIT: whether this process has that capability in its effective set.
has_cap() {
    local key value
    while read -r key value; do
        if [ "$key" = "CapEff:" ]; then
            (( (16#$value >> $1) & 1 ))
            return
        fi
    done </proc/self/status
    return 1
}

# one_of VAR VALUE CHOICE...: VALUE must be one of the choices.
one_of() {
    local var=$1 value=$2 c
    shift 2
    for c in "$@"; do
        [ "$value" = "$c" ] && return 0
    done
    die 2 "$var=$value: give one of: $*"
}

valid_ifname() {
    # Linux: 1-15 bytes, no "/", ":" or blanks, not "." or "..".
    [[ ${#1} -ge 1 && ${#1} -le 15 && $1 != . && $1 != .. && $1 != *[/:[:space:]]* ]]
}

iface_exists() {
    if command -v ip >/dev/null 2>&1; then
        ip link show dev "$1" >/dev/null 2>&1
    else
        [ -e "/sys/class/net/$1" ]
    fi
}

present_ifaces() {
    if command -v ip >/dev/null 2>&1; then
        ip -o link show 2>/dev/null | awk -F': ' '{ sub(/@.*/, "", $2); printf "%s ", $2 }'
    else
        ls /sys/class/net 2>/dev/null | tr '\n' ' '
    fi
}

# Load CONF as `lwaftr run` will: compiles CONF.lwbt (and the rest of the
# configuration beside it) when missing or older than CONF, so that the run
# only maps them; prints the control-plane mode, then "EXTERNAL DEVICE" per
# instance ("-" for none: on a stick).  Exit 2 if CONF does not load.
PREPARE='
import sys
from lwaftr.config.errors import ConfigError
from lwaftr.config.load import load_table
conf = sys.argv[1]
try:
    cfg, _ = load_table(conf)
except ConfigError as e:
    print(f"lwaftr-entrypoint: configuration {conf} does not load: {e}", file=sys.stderr)
    sys.exit(2)
except OSError as e:
    print(f"lwaftr-entrypoint: configuration {conf}: {e}", file=sys.stderr)
    sys.exit(2)
print(cfg.control_plane.mode)
for i in cfg.instances:
    print(i.external_device or "-", i.device)
'

# Each "NAME ROLE" pair: an Ethernet interface, up (lwaftr run's own check,
# lwaftr.io.interfaces).  Exit 2 naming the first that is not.
CHECK_IFACES='
import sys
from lwaftr.io.interfaces import InterfaceError, check_data_interface
a = sys.argv[1:]
for name, role in zip(a[::2], a[1::2]):
    try:
        check_data_interface(name, role)
    except InterfaceError as e:
        print(f"lwaftr-entrypoint: {e}", file=sys.stderr)
        sys.exit(2)
'

# The running instance (NAME, else the only one) answers a ping on its
# control socket and every worker is ready.
HEALTH='
import sys
from lwaftr.cli.counters import pick
from lwaftr.io import state
from lwaftr.io.control import request
try:
    name = pick(sys.argv[1] or None)
    state.read_counters(name)
    reply = request(state.run_dir() / name / "control.sock", {"op": "ping"}, timeout=4)
except (LookupError, OSError, ValueError) as e:
    print(f"unhealthy: {e}")
    sys.exit(1)
workers = reply.get("workers") or {}
down = sorted(w for w, ready in workers.items() if not ready)
if not reply.get("ok") or down:
    print(f"unhealthy: {name}: " + ("workers not ready: " + " ".join(down) if down else str(reply)))
    sys.exit(1)
print(f"healthy: {name}" + (f" ({len(workers)} workers ready)" if workers else ""))
'

health() {
    [ $# -le 1 ] || die 2 "usage: $PROG health [NAME]"
    local py
    py=$(lwaftr_python) || exit 1
    exec "$py" -c "$HEALTH" "${1:-${LWAFTR_NAME:-}}"
}

run_mode() {
    [ $# -ge 1 ] || { usage >&2; die 2 "no configuration file given"; }
    local conf=$1
    shift
    case $conf in
        "") die 2 "the configuration file name is empty" ;;
        -*) usage >&2; die 2 "the first argument must be the configuration file, not $conf" ;;
    esac
    if [ ! -e "$conf" ]; then
        die 2 "configuration file $conf does not exist (mount it into the container, e.g. -v /etc/lwaftr:/etc/lwaftr)"
    elif [ -d "$conf" ]; then
        die 2 "configuration file $conf is a directory"
    elif [ ! -f "$conf" ]; then
        die 2 "configuration file $conf is not a regular file"
    elif ! { : <"$conf"; } 2>/dev/null; then
        die 2 "configuration file $conf is not readable"
    fi

    # Interfaces, one argument per instance; from the first "-..." on: lwaftr run options.
    local -a specs=() extra=()
    while [ $# -gt 0 ]; do
        case $1 in
            --) shift; extra+=("$@"); break ;;
            -*) extra+=("$@"); break ;;
        esac
        specs+=("$1")
        shift
    done
    local i spec v4 v6 rest roles_v6
    for i in "${!specs[@]}"; do
        spec=${specs[$i]}
        IFS=, read -r v4 v6 rest <<<"$spec"
        if [[ $spec == *,* ]]; then
            if [ -n "$rest" ] || ! valid_ifname "$v4" || ! valid_ifname "$v6"; then
                die 2 "interfaces of instance $i: '$spec' is neither V4IF,V6IF nor IFACE"
            fi
        elif ! valid_ifname "$spec"; then
            die 2 "interfaces of instance $i: '$spec' is not an interface name"
        fi
    done

    # Options from the environment.
    local -a opts=()
    if [ -n "${LWAFTR_NAME:-}" ]; then
        opts+=(--name "$LWAFTR_NAME")
    fi
    local io=${LWAFTR_IO:-}
    if [ -n "$io" ]; then
        one_of LWAFTR_IO "$io" afpacket xdp
        opts+=(--io "$io")
    fi
    if [ -n "${LWAFTR_CONTROL_PLANE:-}" ]; then
        one_of LWAFTR_CONTROL_PLANE "$LWAFTR_CONTROL_PLANE" kernel built-in
        opts+=(--control-plane "$LWAFTR_CONTROL_PLANE")
    fi
    if [ -n "${LWAFTR_LOG_LEVEL:-}" ]; then
        one_of LWAFTR_LOG_LEVEL "$LWAFTR_LOG_LEVEL" debug info warning error
        opts+=(--log-level "$LWAFTR_LOG_LEVEL")
    fi
    if [ -n "${LWAFTR_LOG_FORMAT:-}" ]; then
        one_of LWAFTR_LOG_FORMAT "$LWAFTR_LOG_FORMAT" text json syslog
        opts+=(--log-format "$LWAFTR_LOG_FORMAT")
    fi
    if [ -n "${LWAFTR_BATCH:-}" ]; then
        [[ $LWAFTR_BATCH =~ ^[1-9][0-9]*$ ]] || die 2 "LWAFTR_BATCH=$LWAFTR_BATCH: give a positive number of frames"
        opts+=(--batch "$LWAFTR_BATCH")
    fi
    local -a env_extra=()
    if [ -n "${LWAFTR_RUN_ARGS:-}" ]; then
        read -r -a env_extra <<<"$LWAFTR_RUN_ARGS"
    fi
    local wait=${LWAFTR_WAIT_INTERFACES:-0}
    [[ $wait =~ ^[0-9]+$ ]] || die 2 "LWAFTR_WAIT_INTERFACES=$wait: give a number of seconds"
    # lwaftr run options given as arguments or in LWAFTR_RUN_ARGS win (argparse: the last one).
    local -a given=("${env_extra[@]}" "${extra[@]}")
    local cp=${LWAFTR_CONTROL_PLANE:-}
    for i in "${!given[@]}"; do
        case ${given[$i]} in
            --io=*) io=${given[$i]#--io=} ;;
            --io) io=${given[$((i + 1))]:-} ;;
            --control-plane=*) cp=${given[$i]#--control-plane=} ;;
            --control-plane) cp=${given[$((i + 1))]:-} ;;
        esac
    done

    # The configuration, loaded as lwaftr run will (binding table compiled if needed).
    local py out mode
    py=$(lwaftr_python) || exit 1
    if [ ! -w "$(dirname -- "$conf")" ]; then
        note "$(dirname -- "$conf") is read-only: a binding table not compiled beforehand" \
             "(lwaftr compile-configuration) is compiled in memory at every start"
    fi
    out=$("$py" -c "$PREPARE" "$conf") || exit $?
    local -a lines=()
    mapfile -t lines <<<"$out"
    mode=${lines[0]}
    local -a cfg_instances=("${lines[@]:1}")
    local n=${#cfg_instances[@]}
    if [ "${#specs[@]}" -gt "$n" ]; then
        die 2 "${#specs[@]} interface arguments but $conf has $n instance(s)"
    fi

    # Every interface must exist in this network namespace.
    local -a wanted=() roles=()
    if [ "${#specs[@]}" -gt 0 ]; then
        for i in "${!specs[@]}"; do
            IFS=, read -r v4 v6 rest <<<"${specs[$i]}"
            if [ -n "$v6" ]; then
                wanted+=("$v4" "$v6")
                roles+=("instance $i, IPv4 side" "instance $i, IPv6 side")
            else
                wanted+=("$v4")
                roles+=("instance $i, on a stick")
            fi
        done
    else
        for i in "${!cfg_instances[@]}"; do
            read -r v4 v6 <<<"${cfg_instances[$i]}"
            if [ "$v4" != - ]; then
                wanted+=("$v4")
                roles+=("instance $i, IPv4 side, from $conf")
                roles_v6="instance $i, IPv6 side, from $conf"
            else
                roles_v6="instance $i, on a stick, from $conf"
            fi
            wanted+=("$v6")
            roles+=("$roles_v6")
        done
    fi
    local -a missing=()
    local deadline=$((SECONDS + wait))
    while :; do
        missing=()
        for i in "${!wanted[@]}"; do
            iface_exists "${wanted[$i]}" || missing+=("${wanted[$i]} (${roles[$i]})")
        done
        [ ${#missing[@]} -eq 0 ] && break
        if [ "$SECONDS" -ge "$deadline" ]; then
            local m
            for m in "${missing[@]}"; do
                note "interface $m does not exist"
            done
            die 2 "missing interface(s); present here: $(present_ifaces)(use --network host, or move the interface into the container's network namespace; LWAFTR_WAIT_INTERFACES=SECONDS waits for it)"
        fi
        sleep 1
    done

    local -a pairs=()
    for i in "${!wanted[@]}"; do
        pairs+=("${wanted[$i]}" "${roles[$i]}")
    done
    "$py" -c "$CHECK_IFACES" "${pairs[@]}" || exit $?

    # Privileges and devices.
    local -a nocap=()
    has_cap $CAP_NET_ADMIN || nocap+=(NET_ADMIN)
    has_cap $CAP_NET_RAW || nocap+=(NET_RAW)
    if [ ${#nocap[@]} -gt 0 ]; then
        die 2 "lwaftr run needs CAP_NET_ADMIN and CAP_NET_RAW; missing: ${nocap[*]} (docker run --cap-add NET_ADMIN --cap-add NET_RAW)"
    fi
    local effective_mode=${cp:-$mode}
    if [ "$effective_mode" = kernel ] && ! { [ -c /dev/net/tun ] && : <>/dev/net/tun; } 2>/dev/null; then
        die 2 "the kernel control plane needs TAP interfaces and /dev/net/tun cannot be opened" \
              "(docker run --device /dev/net/tun; or LWAFTR_CONTROL_PLANE=built-in)"
    fi
    if [ ! -w /proc/sys/net/ipv4/conf/all/forwarding ]; then
        note "/proc/sys is read-only: lwaftr cannot turn IPv6 off on the data interfaces nor RA and DAD" \
             "on its TAPs (docker run --security-opt systempaths=unconfined, or set them on the host)"
    fi
    if [ "$io" = xdp ]; then
        xdp_prepare
    fi

    local -a cmd=(lwaftr run --conf "$conf")
    for spec in "${specs[@]}"; do
        cmd+=(--instance "$spec")
    done
    cmd+=("${opts[@]}" "${env_extra[@]}" "${extra[@]}")
    if [ -n "${LWAFTR_DRY_RUN:-}" ] && [ "${LWAFTR_DRY_RUN}" != 0 ]; then
        printf '%q' "${cmd[0]}"
        printf ' %q' "${cmd[@]:1}"
        printf '\n'
        exit 0
    fi
    exec "${cmd[@]}"
}

# AF_XDP: bpffs on /sys/fs/bpf (libxdp keeps its program state there), locked
# memory for the UMEMs, CAP_SYS_ADMIN for libxdp.  Nothing
# here is fatal: where AF_XDP is not possible, lwaftr run says why and uses
# AF_PACKET.
xdp_prepare() {
    local dry=${LWAFTR_DRY_RUN:-0}
    if ! awk -v p="$BPFFS" '$2 == p && $3 == "bpf" { found = 1 } END { exit !found }' /proc/self/mounts; then
        if [ "$dry" != 0 ]; then
            note "would mount bpffs on $BPFFS"
        elif ! { mkdir -p "$BPFFS" && mount -t bpf bpf "$BPFFS"; } 2>/dev/null; then
            note "cannot mount bpffs on $BPFFS (needs CAP_SYS_ADMIN; or -v /sys/fs/bpf:/sys/fs/bpf):" \
                 "AF_XDP will fall back to AF_PACKET"
        fi
    fi
    if ! has_cap $CAP_SYS_ADMIN; then
        # CAP_BPF loads programs, but libxdp also looks programs up by id and reads their
        # BTF (BPF_PROG_GET_FD_BY_ID, BPF_BTF_GET_FD_BY_ID): CAP_SYS_ADMIN only.
        note "libxdp needs CAP_SYS_ADMIN to attach its XDP program$(has_cap $CAP_BPF && echo " (CAP_BPF is not enough)")" \
             "(docker run --cap-add SYS_ADMIN): AF_XDP will fall back to AF_PACKET"
    fi
    if ! has_cap $CAP_IPC_LOCK; then
        ulimit -l unlimited 2>/dev/null || ulimit -l "$(ulimit -H -l)" 2>/dev/null || true
        local lim
        lim=$(ulimit -l)
        if [ "$lim" != unlimited ] && [ "$lim" -lt 262144 ]; then
            note "locked-memory limit ${lim} KiB: AF_XDP packet buffers need tens of MiB per interface" \
                 "(docker run --cap-add IPC_LOCK or --ulimit memlock=-1)"
        fi
    fi
}

case ${1:-} in
    "")
        usage >&2
        exit 2
        ;;
    -h | --help | help)
        usage
        ;;
    --help-lwaftr)
        exec "$(lwaftr_bin)" --help
        ;;
    run)
        shift
        run_mode "$@"
        ;;
    health)
        shift
        health "$@"
        ;;
    */* | *.*)
        run_mode "$@"
        ;;
    *)
        if [[ $1 =~ ^[a-z][a-z0-9-]*$ ]]; then
            exec "$(lwaftr_bin)" "$@"       # demo, check, counters, bench, ...
        fi
        run_mode "$@"
        ;;
esac
