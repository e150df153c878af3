"""Management of running instances, outside the data plane.

Among others: ``snapshot`` reads an instance's counters (one or several
workers) from shared memory without asking the data plane anything;
``metrics`` exports them to Prometheus; ``top`` shows their rates in a
terminal.
"""
