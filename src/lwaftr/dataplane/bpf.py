"""pcap-filter packet filters: compiled by libpcap, run by a numba BPF interpreter.

The lwAFTR's ``ingress-filter`` / ``egress-filter`` expressions are written in
the tcpdump/libpcap filter language (``pcap-filter(7)``).  :func:`compile_filter`
hands the expression to libpcap's own compiler (``pcap_open_dead`` for
``DLT_EN10MB``, ``pcap_compile`` with the optimizer on and
``PCAP_NETMASK_UNKNOWN``, then the ``struct bpf_insn`` array is copied out,
``pcap_freecode`` and ``pcap_close``) and returns the classic BPF program as a
``uint32[n, 4]`` array of ``(code, jt, jf, k)`` rows.  :func:`bpf_run` is a
complete classic BPF interpreter compiled with numba, for the reference; the
batch kernels run the same programs translated to machine code
(:mod:`lwaftr.dataplane.bpfjit`, which falls back to this interpreter for a
program with a backward jump).

Filters see untagged Ethernet frames: the engine strips the VLAN tags first.

libpcap access: the ``cypcap`` PyPI package (Cython binding of libpcap,
BSD-3-Clause, stable releases).  It was chosen over the alternatives tried on
this machine because it maps one-to-one onto the calls above
(``open_dead`` -> ``Pcap.compile`` -> ``BpfProgram`` whose instructions can be
read out, freed with ``pcap_freecode``, and executed with
``pcap_offline_filter``; compile errors carry ``pcap_geterr``'s text), has no
Python dependencies, and its manylinux wheel bundles a current libpcap
(1.10.6), so it needs no system library.  ``libpcap`` (karpierz) is
pre-release-only and pulls in ``py-utlx``/``pkg-about``/``build``/``chardet``;
``pcapy-ng`` bundles the older libpcap 1.9.1; ``pypcap`` ships only an sdist
to build and does not expose the instructions.

Interpreter semantics follow libpcap's ``bpf_filter()`` (checked against it
by ``tests/test_bpf.py``): 32-bit unsigned arithmetic; a load outside the
frame, a division or modulus by zero, an unknown opcode, a scratch index
past M[15] or a jump out of the program returns 0 (drop); ``JA`` takes a
signed offset (libpcap's ``protochain`` loops backwards), at most
:data:`MAX_BACKWARD_JUMPS` backward jumps per run; a shift by 32 or more
gives 0 (libpcap does so for X; for K it is undefined C and rejected by the
compiler and the kernel's validator).  Loads never read past ``buf`` even if
``off + length`` does; ``len`` is still ``length``.
"""
from __future__ import annotations

import cypcap
import numba
import numpy as np

# -- classic BPF encoding (<pcap/bpf.h>) ---------------------------------------
# instruction classes: code & 0x07
BPF_LD = 0x00
BPF_LDX = 0x01
BPF_ST = 0x02
BPF_STX = 0x03
BPF_ALU = 0x04
BPF_JMP = 0x05
BPF_RET = 0x06
BPF_MISC = 0x07
# load sizes: code & 0x18
BPF_W = 0x00
BPF_H = 0x08
BPF_B = 0x10
# load modes: code & 0xe0
BPF_IMM = 0x00
BPF_ABS = 0x20
BPF_IND = 0x40
BPF_MEM = 0x60
BPF_LEN = 0x80
BPF_MSH = 0xA0
# ALU operations: code & 0xf0
BPF_ADD = 0x00
BPF_SUB = 0x10
BPF_MUL = 0x20
BPF_DIV = 0x30
BPF_OR = 0x40
BPF_AND = 0x50
BPF_LSH = 0x60
BPF_RSH = 0x70
BPF_NEG = 0x80
BPF_MOD = 0x90
BPF_XOR = 0xA0
# jump operations: code & 0xf0
BPF_JA = 0x00
BPF_JEQ = 0x10
BPF_JGT = 0x20
BPF_JGE = 0x30
BPF_JSET = 0x40
# operand source: code & 0x08
BPF_K = 0x00
BPF_X = 0x08
# return value source: code & 0x18
BPF_A = 0x10
# miscellaneous operations: code & 0xf8
BPF_TAX = 0x00
BPF_TXA = 0x80

BPF_MEMWORDS = 16  # scratch memory M[0..15]
DLT_EN10MB = 1
PCAP_NETMASK_UNKNOWN = 0xFFFFFFFF
MAX_BACKWARD_JUMPS = 4096  # per run: a looping program is cut off (drop)

# Field masks (BPF_CLASS, BPF_SIZE, BPF_MODE, BPF_OP, BPF_SRC).
BPF_CLASS_MASK = 0x07
BPF_SIZE_MASK = 0x18
BPF_MODE_MASK = 0xE0
BPF_OP_MASK = 0xF0
BPF_SRC_MASK = 0x08

# Columns of a program row.
CODE, JT, JF, K = 0, 1, 2, 3

_U32 = 0xFFFFFFFF


class FilterError(ValueError):
    """A filter expression libpcap refused; ``message`` is pcap_geterr's text."""

    def __init__(self, expr: str, message: str) -> None:
        super().__init__(f"bad packet filter {expr!r}: {message}")
        self.expr = expr
        self.message = message


def compile_filter(expr: str, *, snaplen: int = 65535) -> np.ndarray:
    """Compile a pcap-filter expression for Ethernet: ``uint32[n, 4]`` (code, jt, jf, k).

    Matching frames make the program return ``snaplen``, others 0.
    """
    with cypcap.open_dead(cypcap.DatalinkType.EN10MB, snaplen) as pcap:
        try:
            code = pcap.compile(expr, True, PCAP_NETMASK_UNKNOWN)
        except cypcap.Error as e:
            raise FilterError(expr, e.msg) from None
        prog = np.array(list(code), dtype=np.uint32).reshape(-1, 4)
        del code  # pcap_freecode
    return prog


@numba.njit(cache=True, nogil=True, inline="always")
def _rd(buf: np.ndarray, o: int, size: int) -> int:
    """Big-endian load of ``size`` (4, 2 or 1) bytes at ``buf[o]``."""
    if size == 4:
        return ((np.int64(buf[o]) << 24) | (np.int64(buf[o + 1]) << 16)
                | (np.int64(buf[o + 2]) << 8) | np.int64(buf[o + 3]))
    if size == 2:
        return (np.int64(buf[o]) << 8) | np.int64(buf[o + 1])
    return np.int64(buf[o])


@numba.njit(cache=True, nogil=True, inline="always")
def _mul32(a: int, b: int) -> int:
    """``a * b mod 2**32`` for 32-bit operands without int64 overflow."""
    lo = a * (b & 0xFFFF)
    hi = ((a * (b >> 16)) & 0xFFFF) << 16
    return (lo + hi) & _U32


@numba.njit(cache=True, nogil=True)
def bpf_exec(prog: np.ndarray, buf: np.ndarray, off: int, length: int, mem: np.ndarray) -> int:
    """:func:`bpf_run` with caller-provided scratch memory ``mem`` (int64[>=16]).

    For batch kernels: no allocation per frame.  ``mem`` is zeroed first.
    """
    n = prog.shape[0]
    wirelen = np.int64(length)
    caplen = wirelen
    if caplen > buf.shape[0] - off:  # never read past the buffer
        caplen = np.int64(buf.shape[0] - off)
    if caplen < 0 or off < 0:
        caplen = 0
    for i in range(BPF_MEMWORDS):
        mem[i] = 0
    A = np.int64(0)
    X = np.int64(0)
    back = 0
    pc = 0
    while 0 <= pc < n:
        code = np.int64(prog[pc, CODE])
        k = np.int64(prog[pc, K])
        pc += 1
        if code > 0xFF:  # bpf_insn.code is 16 bits wide; every defined code fits in 8
            return 0
        cls = code & BPF_CLASS_MASK

        if cls == BPF_LD:
            if code == BPF_LD | BPF_H | BPF_ABS or code == BPF_LD | BPF_B | BPF_ABS \
                    or code == BPF_LD | BPF_W | BPF_ABS or code == BPF_LD | BPF_H | BPF_IND \
                    or code == BPF_LD | BPF_B | BPF_IND or code == BPF_LD | BPF_W | BPF_IND:
                if (code & BPF_MODE_MASK) == BPF_IND:
                    k += X
                sz = code & BPF_SIZE_MASK
                size = 4 if sz == BPF_W else (2 if sz == BPF_H else 1)
                if k + size > caplen:
                    return 0
                A = _rd(buf, off + k, size)
            elif code == BPF_LD | BPF_W | BPF_LEN:
                A = wirelen & _U32
            elif code == BPF_LD | BPF_IMM:
                A = k
            elif code == BPF_LD | BPF_MEM:
                if k >= BPF_MEMWORDS:
                    return 0
                A = mem[k]
            else:
                return 0

        elif cls == BPF_JMP:
            op = code & BPF_OP_MASK
            if op == BPF_JA:
                if code != BPF_JMP | BPF_JA:
                    return 0
                if k >= 0x80000000:  # sign-extend: a backward jump
                    k -= 0x100000000
                    back += 1
                    if k == -1 or back > MAX_BACKWARD_JUMPS:
                        return 0
                pc += k
                continue
            v = X if (code & BPF_SRC_MASK) == BPF_X else k
            if op == BPF_JEQ:
                cond = A == v
            elif op == BPF_JGT:
                cond = A > v
            elif op == BPF_JGE:
                cond = A >= v
            elif op == BPF_JSET:
                cond = (A & v) != 0
            else:
                return 0
            pc += np.int64(prog[pc - 1, JT]) if cond else np.int64(prog[pc - 1, JF])

        elif cls == BPF_RET:
            if code == BPF_RET | BPF_K:
                return k
            if code == BPF_RET | BPF_A:
                return A
            return 0

        elif cls == BPF_LDX:
            if code == BPF_LDX | BPF_MSH | BPF_B:
                if k >= caplen:
                    return 0
                X = (np.int64(buf[off + k]) & 0xF) << 2
            elif code == BPF_LDX | BPF_W | BPF_IMM:
                X = k
            elif code == BPF_LDX | BPF_W | BPF_MEM:
                if k >= BPF_MEMWORDS:
                    return 0
                X = mem[k]
            elif code == BPF_LDX | BPF_W | BPF_LEN:
                X = wirelen & _U32
            else:
                return 0

        elif cls == BPF_ALU:
            op = code & BPF_OP_MASK
            if code == BPF_ALU | BPF_NEG:
                A = (-A) & _U32
                continue
            if op > BPF_XOR:
                return 0
            v = X if (code & BPF_SRC_MASK) == BPF_X else k
            if op == BPF_ADD:
                A = (A + v) & _U32
            elif op == BPF_SUB:
                A = (A - v) & _U32
            elif op == BPF_MUL:
                A = _mul32(A, v)
            elif op == BPF_DIV:
                if v == 0:
                    return 0
                A = A // v
            elif op == BPF_MOD:
                if v == 0:
                    return 0
                A = A % v
            elif op == BPF_AND:
                A = A & v
            elif op == BPF_OR:
                A = A | v
            elif op == BPF_XOR:
                A = A ^ v
            elif op == BPF_LSH:
                A = ((A << v) & _U32) if v < 32 else 0
            elif op == BPF_RSH:
                A = (A >> v) if v < 32 else 0
            else:
                return 0

        elif cls == BPF_ST or cls == BPF_STX:
            if code != cls or k >= BPF_MEMWORDS:
                return 0
            mem[k] = A if cls == BPF_ST else X

        else:  # BPF_MISC
            if code == BPF_MISC | BPF_TAX:
                X = A
            elif code == BPF_MISC | BPF_TXA:
                A = X
            else:
                return 0
    return 0


@numba.njit(cache=True, nogil=True)
def bpf_run(prog: np.ndarray, buf: np.ndarray, off: int, length: int) -> int:
    """Run BPF program ``prog`` (uint32[n, 4]) on ``buf[off:off + length]``.

    ``buf`` is a 1-D uint8 array (e.g. one packet-pool row).  Returns the
    program's return value as an int: 0 means drop.
    """
    mem = np.empty(BPF_MEMWORDS, np.int64)
    return bpf_exec(prog, buf, off, length, mem)


@numba.njit(cache=True, nogil=True)
def filter_slots(prog: np.ndarray, buf: np.ndarray, off: np.ndarray, length: np.ndarray,
                 slots: np.ndarray, keep: np.ndarray) -> int:
    """Batch form over a packet pool: ``keep[i] = 1`` if the frame in slot
    ``slots[i]`` (``buf[s, off[s]:off[s] + length[s]]``) passes, else 0.
    Returns the number kept."""
    mem = np.empty(BPF_MEMWORDS, np.int64)
    kept = 0
    for i in range(slots.shape[0]):
        s = slots[i]
        ok = bpf_exec(prog, buf[s], off[s], length[s], mem) != 0
        keep[i] = 1 if ok else 0
        kept += 1 if ok else 0
    return kept


def matches(prog: np.ndarray, frame: bytes) -> bool:
    """True if ``frame`` (a whole Ethernet frame) passes ``prog``."""
    buf = np.frombuffer(frame, dtype=np.uint8).copy()
    return bpf_run(prog, buf, 0, buf.shape[0]) != 0


class PacketFilter:
    """A compiled pcap-filter expression; call it on a frame for the verdict."""

    __slots__ = ("expr", "prog")

    def __init__(self, expr: str, *, snaplen: int = 65535) -> None:
        self.expr = expr
        self.prog = compile_filter(expr, snaplen=snaplen)

    def __call__(self, frame: bytes) -> bool:
        return matches(self.prog, frame)

    def __repr__(self) -> str:
        return f"PacketFilter({self.expr!r})"
