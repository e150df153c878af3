"""The reference lwAFTR the tests hold the product's compiled data plane to.

A plain Python model of every stage, on frames as ``bytes``, in Snabb's order
(:class:`~reference.slowpath.SlowPath`), and an engine around it with the
product :class:`~lwaftr.dataplane.engine.Engine`'s interface
(:class:`~reference.engine.ReferenceEngine`).  It is not part of the product:
property tests run both on the same traffic and compare frames, per-packet
verdicts' effects and counters.
"""
