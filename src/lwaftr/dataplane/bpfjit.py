"""pcap filters compiled to machine code: classic BPF translated to numba.

The interpreter in :mod:`lwaftr.dataplane.bpf` decodes every instruction of
every frame: ~21 ns for ``ip`` (three instructions) on this machine kind.
:func:`compile_filters` translates the engine's programs to Python source
once, when the engine is built, and numba compiles that to one C-callable
function (``@cfunc``, :data:`FILTER_SIG`): ``flt(k, p, caplen, wirelen)``
runs program ``k`` on the frame at pointer ``p``.  The kernels take it as a
first-class function (``FunctionType``), so they are compiled once for every
filter set and call it indirectly: ~3 ns for ``ip``.

The translation keeps the interpreter's semantics exactly (the tests run both
on the same corpus and random programs): each basic block becomes an
``if reached:`` section in program order (classic BPF jumps only forward, so
program order is a topological order); ``A``, ``X`` and the scratch words are
locals; every check the interpreter makes at run time (a load past the
frame, a division by zero, an unknown opcode, a jump out of the program) is
made the same way, at translation time where the operand is a constant.  A
program with a backward jump (libpcap's ``protochain`` loops) is not
translated: its function runs the interpreter on it.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence

import numba
import numpy as np
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from lwaftr.dataplane import bpf as B
from lwaftr.dataplane.bpf import BPF_MEMWORDS, _mul32, bpf_exec

#: ``flt(k, p, caplen, wirelen) -> verdict``: program ``k`` on the ``caplen``
#: readable bytes at ``p`` of a ``wirelen``-byte frame (0: refused).
FILTER_SIG = types.int64(types.int64, types.CPointer(types.uint8), types.int64, types.int64)


@intrinsic
def _at(typingctx, arr, off):
    """A pointer to ``arr[off]`` (1-D uint8 array; not bounds-checked)."""
    sig = types.CPointer(types.uint8)(arr, off)

    def codegen(context, builder, signature, args):
        a = context.make_array(signature.args[0])(context, builder, args[0])
        return cgutils.get_item_pointer(context, builder, signature.args[0], a, [args[1]], wraparound=False)

    return sig, codegen


@numba.njit(cache=True, nogil=True, inline="always")
def run_filter(flt, k: int, b: np.ndarray, off: int, length: int) -> int:
    """Filter ``k`` of ``flt`` on the ``length``-byte frame at ``b[off]`` (a 1-D
    uint8 array): its return value, 0 for a refusal.  Loads never read past
    ``b`` (the interpreter's rule: ``len`` is still ``length``)."""
    cap = np.int64(length)
    if cap > b.shape[0] - off:
        cap = np.int64(b.shape[0] - off)
    if cap < 0 or off < 0:
        return flt(k, _at(b, 0), 0, length)
    return flt(k, _at(b, off), cap, length)


@numba.njit(cache=True, nogil=True, inline="always")
def refused(flt, k: int, b: np.ndarray, off: int, length: int) -> bool:
    """Does filter ``k`` refuse the frame (:func:`run_filter`)?  ``k < 0``: no filter."""
    return k >= 0 and run_filter(flt, k, b, off, length) == 0


@numba.cfunc(FILTER_SIG, nogil=True, cache=True)
def _no_filters(k, p, caplen, wirelen):  # pragma: no cover - compiled
    return 1


def _load(o: str, size: int) -> str:
    """The expression of a big-endian load of ``size`` bytes at ``p[o]``."""
    parts = [f"(np.int64(p[{o} + {j}]) << {8 * (size - 1 - j)})" for j in range(size)]
    return " | ".join(parts).replace(" + 0]", "]").replace(" << 0)", ")")


@numba.njit(cache=True, nogil=True)
def _interpret(prog, p, caplen: int, wirelen: int) -> int:
    """A program the translator leaves to the interpreter (a backward jump)."""
    mem = np.empty(BPF_MEMWORDS, np.int64)
    return bpf_exec(prog, numba.carray(p, (caplen,)), 0, wirelen, mem)


_SIZES = {B.BPF_W: 4, B.BPF_H: 2, B.BPF_B: 1}
_LOADS = {B.BPF_LD | s | m for s in _SIZES for m in (B.BPF_ABS, B.BPF_IND)}
_ALU = {B.BPF_ADD: "({a} + {v}) & 0xFFFFFFFF", B.BPF_SUB: "({a} - {v}) & 0xFFFFFFFF",
        B.BPF_MUL: "_mul32({a}, {v})", B.BPF_DIV: "{a} // {v}", B.BPF_MOD: "{a} % {v}",
        B.BPF_AND: "{a} & {v}", B.BPF_OR: "{a} | {v}", B.BPF_XOR: "{a} ^ {v}"}
_JMP = {B.BPF_JEQ: "A == {v}", B.BPF_JGT: "A > {v}", B.BPF_JGE: "A >= {v}", B.BPF_JSET: "(A & {v}) != 0"}


def _has_backward_jump(prog: np.ndarray) -> bool:
    return any(int(c) == B.BPF_JMP | B.BPF_JA and int(k) >= 0x80000000 for c, _, _, k in prog)


def _insn(i: int, code: int, jt: int, jf: int, k: int) -> tuple[list[str], list[int], bool]:
    """Instruction ``i``: its lines (``@j``: go to ``targets[j]``), the
    instructions it jumps to (``n`` or beyond: out of the program, a drop) and
    whether control can fall through to ``i + 1``."""
    drop = (["return 0"], [], False)
    if code > 0xFF:
        return drop
    cls = code & B.BPF_CLASS_MASK
    if cls == B.BPF_LD:
        if code in _LOADS:
            size = _SIZES[code & B.BPF_SIZE_MASK]
            if code & B.BPF_MODE_MASK == B.BPF_IND:
                return [f"o = X + {k}", f"if o + {size} > caplen:", "    return 0",
                        f"A = {_load('o', size)}"], [], True
            return [f"if {k + size} > caplen:", "    return 0", f"A = {_load(str(k), size)}"], [], True
        if code == B.BPF_LD | B.BPF_W | B.BPF_LEN:
            return ["A = wirelen & 0xFFFFFFFF"], [], True
        if code == B.BPF_LD | B.BPF_IMM:
            return [f"A = {k}"], [], True
        if code == B.BPF_LD | B.BPF_MEM and k < BPF_MEMWORDS:
            return [f"A = m{k}"], [], True
        return drop
    if cls == B.BPF_JMP:
        op = code & B.BPF_OP_MASK
        if op == B.BPF_JA:
            if code != B.BPF_JMP | B.BPF_JA:
                return drop
            return ["@0"], [i + 1 + k], False        # forward: backward jumps are not translated
        if op not in _JMP:
            return drop
        v = "X" if code & B.BPF_SRC_MASK == B.BPF_X else str(k)
        return [f"if {_JMP[op].format(v=v)}:", "    @0", "else:", "    @1"], [i + 1 + jt, i + 1 + jf], False
    if cls == B.BPF_RET:
        if code == B.BPF_RET | B.BPF_K:
            return [f"return {k}"], [], False
        if code == B.BPF_RET | B.BPF_A:
            return ["return A"], [], False
        return drop
    if cls == B.BPF_LDX:
        if code == B.BPF_LDX | B.BPF_MSH | B.BPF_B:
            return [f"if {k} >= caplen:", "    return 0", f"X = (np.int64(p[{k}]) & 0xF) << 2"], [], True
        if code == B.BPF_LDX | B.BPF_W | B.BPF_IMM:
            return [f"X = {k}"], [], True
        if code == B.BPF_LDX | B.BPF_W | B.BPF_MEM and k < BPF_MEMWORDS:
            return [f"X = m{k}"], [], True
        if code == B.BPF_LDX | B.BPF_W | B.BPF_LEN:
            return ["X = wirelen & 0xFFFFFFFF"], [], True
        return drop
    if cls == B.BPF_ALU:
        op = code & B.BPF_OP_MASK
        if code == B.BPF_ALU | B.BPF_NEG:
            return ["A = (-A) & 0xFFFFFFFF"], [], True
        if op > B.BPF_XOR:
            return drop
        x = code & B.BPF_SRC_MASK == B.BPF_X
        v = "X" if x else str(k)
        if op in (B.BPF_DIV, B.BPF_MOD):
            if not x and k == 0:
                return drop
            guard = ["if X == 0:", "    return 0"] if x else []
            return guard + [f"A = {_ALU[op].format(a='A', v=v)}"], [], True
        if op == B.BPF_LSH:
            if x:
                return ["A = ((A << X) & 0xFFFFFFFF) if X < 32 else 0"], [], True
            return [f"A = (A << {k}) & 0xFFFFFFFF" if k < 32 else "A = 0"], [], True
        if op == B.BPF_RSH:
            if x:
                return ["A = (A >> X) if X < 32 else 0"], [], True
            return [f"A = A >> {k}" if k < 32 else "A = 0"], [], True
        if op not in _ALU:
            return drop
        return [f"A = {_ALU[op].format(a='A', v=v)}"], [], True
    if cls in (B.BPF_ST, B.BPF_STX):
        if code != cls or k >= BPF_MEMWORDS:
            return drop
        return [f"m{k} = {'A' if cls == B.BPF_ST else 'X'}"], [], True
    if code == B.BPF_MISC | B.BPF_TAX:
        return ["X = A"], [], True
    if code == B.BPF_MISC | B.BPF_TXA:
        return ["A = X"], [], True
    return drop


def translate(prog: np.ndarray) -> list[str]:
    """Python statements running ``prog`` (``uint32[n, 4]``) on ``p``,
    ``caplen`` and ``wirelen`` as :func:`lwaftr.dataplane.bpf.bpf_exec` does,
    ending in a ``return``.  They set every name they read first."""
    n = prog.shape[0]
    insns = [_insn(i, *(int(x) for x in prog[i])) for i in range(n)]
    # Reachable instructions, and the block leaders among them (jump targets).
    reached = [False] * (n + 1)
    jumped = [False] * (n + 1)
    if n:
        reached[0] = True
    for i, (_, targets, falls) in enumerate(insns):
        if not reached[i]:
            continue
        for t in targets:
            if t < n:
                reached[t] = jumped[t] = True
        if falls:
            reached[i + 1] = True
    body = ["A = np.int64(0)", "X = np.int64(0)"]
    used = sorted({int(k) for c, _, _, k in prog
                   if int(c) in (B.BPF_LD | B.BPF_MEM, B.BPF_LDX | B.BPF_W | B.BPF_MEM, B.BPF_ST, B.BPF_STX)
                   and int(k) < BPF_MEMWORDS})
    body += [f"m{k} = np.int64(0)" for k in used]
    body += [f"g{t} = False" for t in range(1, n) if jumped[t]]
    indent = ""
    for i, (lines, targets, falls) in enumerate(insns):
        if not reached[i]:
            continue
        if jumped[i]:                                         # a block of its own: "if reached:"
            if i > 0 and reached[i - 1] and insns[i - 1][2]:   # also reached by falling through
                body.append(f"{indent}g{i} = True")
            body.append(f"if g{i}:")
            indent = "    "
        for line in lines:
            text = line.lstrip()
            if text.startswith("@"):                          # a jump: to targets[j]
                t = targets[int(text[1:])]
                line = line[:len(line) - len(text)] + (f"g{t} = True" if t < n else "return 0")
            body.append(indent + line)
    body.append("return 0")
    return body


def compile_filters(progs: Sequence[np.ndarray | None]):
    """One compiled function for ``progs`` (``None``: no filter there):
    ``flt(k, p, caplen, wirelen)`` runs ``progs[k]``.  With no program at all,
    a shared function that passes everything (the kernels skip it: ``k < 0``).
    Compiling takes ~0.2 s for ``ip``; an engine rebuilt with the same filters
    (a reload) reuses the function."""
    key = tuple(None if p is None else np.ascontiguousarray(p, np.uint32).tobytes() for p in progs)
    return _compiled(key)


@functools.lru_cache(maxsize=32)
def _compiled(key: tuple[bytes | None, ...]):
    progs = [None if b is None else np.frombuffer(b, np.uint32).reshape(-1, 4) for b in key]
    if not any(p is not None for p in progs):
        return _no_filters
    glb = {"np": np, "_mul32": _mul32, "_interpret": _interpret}
    src = ["def flt(k, p, caplen, wirelen):"]
    for k, prog in enumerate(progs):
        if prog is None:
            continue
        if _has_backward_jump(prog):
            glb[f"_prog{k}"] = np.ascontiguousarray(prog, np.uint32)
            body = [f"return _interpret(_prog{k}, p, caplen, wirelen)"]
        else:
            body = translate(prog)
        src.append(f"    if k == {k}:")
        src += ["        " + line for line in body]
    src.append("    return 1")
    exec(compile("\n".join(src) + "\n", "<bpfjit>", "exec"), glb)   # noqa: S102 - our own generated source
    return numba.cfunc(FILTER_SIG, nogil=True)(glb["flt"])


def filter_index(progs: Sequence[np.ndarray | None]) -> np.ndarray:
    """``int64[len(progs)]``: ``k`` where program ``k`` exists, -1 where it does not."""
    return np.array([k if p is not None else -1 for k, p in enumerate(progs)], np.int64)
