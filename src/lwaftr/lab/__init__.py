"""A network-namespace lab for demos and tests: **not part of the router**.

``lwaftr demo`` and ``tests/test_e2e.py`` build a small network out of Linux
network namespaces and veth pairs (``netns``), with user-space lwB4s
(``b4tunnel``: the kernel has no ``ip6tnl`` here) and the lwAFTR itself
running as ``lwaftr run`` in one of the namespaces (``topology``).  Needs
root, ``ip`` (iproute2), ``nft`` (nftables), ``ethtool`` and ``ping``.
Nothing here is used by the data plane.
"""
