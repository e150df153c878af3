"""pcap filters compiled to machine code (:mod:`lwaftr.dataplane.bpfjit`)
against the interpreter, which ``test_bpf`` holds to libpcap's own.

Every verdict and every ``ret a`` value must be the interpreter's, on the same
corpus of filters and frames, on each opcode with operands read from the frame
(so that the arithmetic runs, not the compiler's constant folding), on random
programs and on the cases where the interpreter defines its own semantics.
"""
from __future__ import annotations

import itertools

import numba
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lwaftr.dataplane import bpf as B
from lwaftr.dataplane import bpfjit
from lwaftr.dataplane.bpf import bpf_run, compile_filter

from test_bpf import (
    A_VALUES, ALL_FRAMES, ALU_OPS, CRAFTED, FILTERS, HAND, JMP_OPS, PROBE_FRAMES, RET_A, I,
    mutated_frame, random_program,
)


@numba.njit(cache=True)
def _run_all(flt, ks, row, off, length, out):
    for j in range(ks.shape[0]):
        out[j] = bpfjit.run_filter(flt, ks[j], row, off, length)


class Compiled:
    """``progs`` compiled together; :meth:`check` compares each with the interpreter."""

    def __init__(self, progs: list[np.ndarray]) -> None:
        self.progs = [np.ascontiguousarray(p, np.uint32).reshape(-1, 4) for p in progs]
        self.flt = bpfjit.compile_filters(self.progs)
        self.ks = np.arange(len(self.progs), dtype=np.int64)
        self.out = np.empty(len(self.progs), np.int64)

    def run(self, row: np.ndarray, off: int, length: int) -> list[int]:
        _run_all(self.flt, self.ks, row, off, length, self.out)
        return self.out.tolist()

    def check(self, frame: bytes, off: int = 5, tail: int = 8) -> None:
        """Frame at ``off`` in a row with ``tail`` junk bytes after it (loads must not see them)."""
        row = np.full(off + len(frame) + tail, 0xA5, np.uint8)
        row[off:off + len(frame)] = np.frombuffer(frame, np.uint8)
        got = self.run(row, off, len(frame))
        want = [int(bpf_run(p, row, off, len(frame))) for p in self.progs]
        bad = [(k, w, g) for k, (w, g) in enumerate(zip(want, got)) if w != g]
        assert not bad, [(self.progs[k].tolist(), w, g, frame.hex()) for k, w, g in bad[:3]]


@pytest.fixture(scope="module")
def corpus() -> Compiled:
    return Compiled([compile_filter(e) for e in FILTERS])


def test_corpus_filters(corpus: Compiled) -> None:
    """Every filter of the corpus (the conformance configs', and expressions that
    make libpcap emit every opcode, protochain's backward jumps included) on
    every crafted, truncated and vector frame."""
    assert any(bpfjit._has_backward_jump(p) for p in corpus.progs)   # the interpreter's fallback is in
    for frame in ALL_FRAMES:
        corpus.check(frame)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                    HealthCheck.function_scoped_fixture])
@given(frame=mutated_frame())
def test_corpus_on_mutated_frames(corpus: Compiled, frame: bytes) -> None:
    corpus.check(frame)


def _operand_programs() -> list[list]:
    """Each ALU and jump operation with A (and X) read from the frame's first
    eight bytes, for every K of the hand-written set."""
    lda = I(B.BPF_LD | B.BPF_W | B.BPF_ABS, 0)
    ldx = [I(B.BPF_LD | B.BPF_W | B.BPF_ABS, 4), I(B.BPF_MISC | B.BPF_TAX)]
    out = []
    for op in ALU_OPS:
        for k in A_VALUES + [40, 63]:
            out.append([lda, I(B.BPF_ALU | op | B.BPF_K, k), RET_A])
        out.append(ldx + [lda, I(B.BPF_ALU | op | B.BPF_X), RET_A])
    out.append([lda, I(B.BPF_ALU | B.BPF_NEG), RET_A])
    for op in JMP_OPS:
        for k in A_VALUES:
            out.append([lda, I(B.BPF_JMP | op | B.BPF_K, k, 0, 1), I(B.BPF_RET | B.BPF_K, 7), RET_A])
        out.append(ldx + [lda, I(B.BPF_JMP | op | B.BPF_X, 0, 1, 0), RET_A, I(B.BPF_RET | B.BPF_K, 9)])
    return out


def test_operations_on_frame_values() -> None:
    c = Compiled(_operand_programs())
    frames = [a.to_bytes(4, "big") + x.to_bytes(4, "big") for a, x in itertools.product(A_VALUES, repeat=2)]
    for frame in frames + [f[:n] for f in frames[:3] for n in range(8)]:
        c.check(frame)


def test_hand_programs() -> None:
    """Every tenth of test_bpf's hand-written programs (all its forms: loads at
    each size and mode, scratch memory, every ALU and jump op)."""
    c = Compiled([p for _, p in HAND[::10]])
    for frame in PROBE_FRAMES:
        c.check(frame)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(random_program(), min_size=24, max_size=24), st.lists(st.binary(max_size=80), max_size=6))
def test_random_programs(programs: list, frames: list[bytes]) -> None:
    c = Compiled(programs)
    for frame in frames + [CRAFTED[0], CRAFTED[16], bytes(range(80))]:
        c.check(frame)


def test_own_semantics() -> None:
    """Where libpcap's interpreter is undefined or never returns, the
    interpreter's own rules (test_bpf.test_undefined_cases_drop) hold."""
    imm = I(B.BPF_LD | B.BPF_IMM, 12345)
    progs = [
        [imm, I(B.BPF_ALU | B.BPF_DIV | B.BPF_K, 0), RET_A], [imm, I(B.BPF_ALU | B.BPF_MOD | B.BPF_K, 0), RET_A],
        [imm, I(B.BPF_LDX | B.BPF_W | B.BPF_IMM, 0), I(B.BPF_ALU | B.BPF_DIV | B.BPF_X), RET_A],
        [imm, I(B.BPF_ALU | B.BPF_LSH | B.BPF_K, 32), RET_A], [imm, I(B.BPF_ALU | B.BPF_RSH | B.BPF_K, 40), RET_A],
        [imm, (0xB4, 0, 0, 0), RET_A], [imm, (B.BPF_ALU | B.BPF_NEG | B.BPF_X, 0, 0, 0), RET_A],
        [imm, (B.BPF_LD | 0x18 | B.BPF_ABS, 0, 0, 0), RET_A], [imm, (B.BPF_RET | B.BPF_X, 0, 0, 0)],
        [imm, (0x1FF, 0, 0, 0), RET_A], [imm, I(B.BPF_ST, 16), RET_A], [imm, I(B.BPF_LD | B.BPF_MEM, 99), RET_A],
        [imm], [imm, I(B.BPF_JMP | B.BPF_JA, 5), RET_A], [imm, I(B.BPF_JMP | B.BPF_JEQ | B.BPF_K, 12345, 9, 0), RET_A],
        [imm, I(B.BPF_JMP | B.BPF_JA, -1), RET_A], [imm, I(B.BPF_JMP | B.BPF_JA, -2), RET_A],
        [I(B.BPF_JMP | B.BPF_JA, -5), RET_A], np.zeros((0, 4), np.uint32),
        [imm, (B.BPF_JMP | B.BPF_JA | B.BPF_X, 0, 0, 0), RET_A],
    ]
    loop = [I(B.BPF_ALU | B.BPF_ADD | B.BPF_K, 1), I(B.BPF_JMP | B.BPF_JEQ | B.BPF_K, B.MAX_BACKWARD_JUMPS + 1, 1, 0),
            I(B.BPF_JMP | B.BPF_JA, -3), RET_A]
    c = Compiled(progs + [loop])
    assert c.run(np.frombuffer(b"abcdefgh", np.uint8).copy(), 0, 8) == [0] * len(progs) + [B.MAX_BACKWARD_JUMPS + 1]


def test_lengths_and_offsets() -> None:
    """A load reaches exactly to the end of the frame and of the row, and only
    there; ``len`` is the frame's length even where the row is shorter."""
    ld = np.array([I(B.BPF_LD | B.BPF_W | B.BPF_ABS, 4), RET_A], np.uint32)
    ldlen = np.array([I(B.BPF_LD | B.BPF_W | B.BPF_LEN), RET_A], np.uint32)
    c = Compiled([ld, ldlen])
    row = np.arange(32, dtype=np.uint8)
    assert c.run(row, 10, 8) == [0x0E0F1011, 8]
    assert c.run(row, 10, 7) == [0, 7]
    assert c.run(row, 24, 100) == [0x1C1D1E1F, 100]
    assert c.run(row, 25, 100) == [0, 100]
    assert c.run(row, 40, 8) == [0, 8]
    assert c.run(row, -1, 8) == [0, 8]


@numba.njit(cache=True)
def _refused(flt, k, row, off, length):
    return bpfjit.refused(flt, k, row, off, length)


def test_filter_sets() -> None:
    """An engine's four filters in one function, absent ones skipped; no
    filters at all share one function; the same set compiles once."""
    assert bpfjit.compile_filters([None] * 4) is bpfjit.compile_filters([None, None])
    ip, ip6 = compile_filter("ip"), compile_filter("ip6")
    progs = [ip, None, None, ip6]
    flt = bpfjit.compile_filters(progs)
    assert bpfjit.compile_filters([ip.copy(), None, None, ip6.copy()]) is flt
    ks = bpfjit.filter_index(progs)
    assert ks.tolist() == [0, -1, -1, 3]
    v4, v6 = CRAFTED[0], CRAFTED[16]
    for frame, want in ((v4, [False, False, False, True]), (v6, [True, False, False, False])):
        row = np.frombuffer(frame, np.uint8).copy()
        assert [_refused(flt, k, row, 0, len(frame)) for k in ks] == want
