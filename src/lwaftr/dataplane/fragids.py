"""What the compiled fragmenters (:mod:`lwaftr.dataplane.frag4`, IPv6 in
:mod:`lwaftr.dataplane.kernels`) share: fragment IDs and the MTUs they cut to.

Fragment IDs.  Each side keeps a counter, the last ID used, in a one-element
array; every datagram fragmented takes the last ID + 1 (mod 2^16 for IPv4, 2^32
for IPv6) for all its fragments.  This is Snabb's ``fresh_fragment_id``.
Snabb seeds it at random, except that ``snabb lwaftr check`` (which made the
reference vectors) first calls ``use_deterministic_first_fragment_id``, seeding
0x4242 (IPv4) and 0x42424242 (IPv6): so the vectors' fragments carry IDs 0x4243
and 0x42424243.  Here the seed is a required argument: ``None`` (production:
``lwaftr run`` and every worker, each restart included) starts at a random value
from ``os.urandom``, so two workers fragmenting towards one B4 behind ECMP do
not hand out the same IDs; ``lwaftr check`` passes :data:`SNABB_CHECK_ID_SEEDS`
to reproduce the vectors.  Either way IDs are sequential, as in Snabb, hence
predictable after the first (RFC 7739 would rather they were not).
"""
from __future__ import annotations

import os

import numpy as np

#: ``snabb lwaftr check``'s (IPv4, IPv6) seeds: the first IDs used are 0x4243 and 0x42424243.
SNABB_CHECK_ID_SEEDS = (0x4242, 0x42424242)
#: RFC 791 3.2: every module must forward 68 octets unfragmented.
IPV4_MIN_MTU = 68
#: RFC 8200 5: the IPv6 minimum link MTU.
IPV6_MIN_MTU = 1280
#: Fragment ID widths: IPv4's 16 bits, IPv6's 32 (RFC 791 3.1, RFC 8200 4.5).
ID_MASK4 = 0xFFFF
ID_MASK6 = 0xFFFFFFFF


def new_ids(seed: int | None, mask: int) -> np.ndarray:
    """The last-ID array of one side (``mask``: :data:`ID_MASK4` or :data:`ID_MASK6`),
    counting up from ``seed``, or from a random value if ``seed`` is None."""
    start = int.from_bytes(os.urandom(4), "big") if seed is None else seed
    return np.array([start & mask], np.int64)


def check_mtus(ext_mtu: int, int_mtu: int) -> None:
    """ValueError, naming the interface, if an MTU is below its protocol's minimum."""
    if ext_mtu < IPV4_MIN_MTU:
        raise ValueError(f"external-interface mtu {ext_mtu} is below the RFC 791 minimum of {IPV4_MIN_MTU}")
    if int_mtu < IPV6_MIN_MTU:
        raise ValueError(f"internal-interface mtu {int_mtu} is below the RFC 8200 minimum of {IPV6_MIN_MTU}")
