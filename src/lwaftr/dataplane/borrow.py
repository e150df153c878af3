"""``borrowed``: an array without a reference count, for the batch kernels.

numba counts references to every array it binds: each view of a frame
(``b = buf[s]``), each array handed to a helper (inlined or not) costs an
``NRT_incref``/``NRT_decref`` pair, and its pruning pass leaves many of them
in the kernels' branchy per-frame loops (the compiled IR showed them on the
common path: the frame's view, ``P`` and the BR table in ``classify_b4``).  Each
is an atomic add, a full barrier that also holds back the loads the kernels
prefetch.

An array :func:`borrowed` at the top of a batch kernel is the same array
with no meminfo: counting it is a test of a null pointer.  Only for arrays that
stay alive for the whole call (the kernels' arguments, which the caller
holds), never stored or returned.
"""
from __future__ import annotations

from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


def _borrow(context, builder, ty, value):
    if isinstance(ty, types.Array):
        a = context.make_array(ty)(context, builder, value=value)
        a.meminfo = cgutils.get_null_value(a.meminfo.type)
        return a._getvalue()
    if isinstance(ty, types.BaseTuple):
        out = value
        for i, t in enumerate(ty.types):
            out = builder.insert_value(out, _borrow(context, builder, t, builder.extract_value(value, i)), i)
        return out
    return value


@intrinsic
def borrowed(typingctx, value):
    """``value`` (an array, or a tuple of arrays, tuples and scalars) without
    the arrays' reference counts (see the module's docstring)."""
    sig = value(value)

    def codegen(context, builder, signature, args):
        return _borrow(context, builder, signature.args[0], args[0])

    return sig, codegen
