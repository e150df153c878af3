"""``copy_bytes``: memcpy between two byte arrays, from numba.

A byte loop between two views of the packet pool (one slot into another)
does not vectorise: the compiler must assume the views overlap.  Measured on
reassembly, gathering a 520-byte fragment took ~1,900 cycles that way.  The
caller guarantees that the ranges do not overlap (different slots, or a slot
and another buffer).
"""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


@intrinsic
def copy_bytes(typingctx, dst, dst_off, src, src_off, n):
    """``dst[dst_off:dst_off + n] = src[src_off:src_off + n]`` (1-D uint8 arrays,
    ranges that do not overlap, in bounds: not checked)."""
    sig = types.void(dst, dst_off, src, src_off, n)

    def codegen(context, builder, signature, args):
        dty, _, sty, _, nty = signature.args
        d = context.make_array(dty)(context, builder, args[0])
        s = context.make_array(sty)(context, builder, args[2])
        dp = cgutils.get_item_pointer(context, builder, dty, d, [args[1]], wraparound=False)
        sp = cgutils.get_item_pointer(context, builder, sty, s, [args[3]], wraparound=False)
        i8p = ir.IntType(8).as_pointer()
        count = context.cast(builder, args[4], nty, types.intp)
        cgutils.raw_memcpy(builder, builder.bitcast(dp, i8p), builder.bitcast(sp, i8p), count, 1)
        return context.get_dummy_value()

    return sig, codegen
