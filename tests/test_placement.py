"""Which core each worker gets (lwaftr.io.placement), and the ``cpu`` leaf-list that configures it."""
from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import pytest

from lwaftr.config.errors import ConfigError
from lwaftr.config.ietf import dumps_ietf, loads_ietf
from lwaftr.config.snabb import dump_snabb, loads_snabb
from lwaftr.examples import example_config
from lwaftr.io.placement import PlacementError, assign, numa_node, parse_cpulist


@pytest.fixture
def sysfs(tmp_path: Path) -> Path:
    """Two NUMA nodes of four cores; eth0 on node 1, eth1 on node 0, veth0 on none."""
    for node, cpus in ((0, "0-3"), (1, "4-7")):
        d = tmp_path / f"devices/system/node/node{node}"
        d.mkdir(parents=True)
        (d / "cpulist").write_text(cpus + "\n")
    (tmp_path / "devices/system/cpu").mkdir(parents=True)
    (tmp_path / "devices/system/cpu/online").write_text("0-7\n")
    for dev, node in (("eth0", "1"), ("eth1", "0")):
        d = tmp_path / f"class/net/{dev}/device"
        d.mkdir(parents=True)
        (d / "numa_node").write_text(node + "\n")
    (tmp_path / "class/net/veth0").mkdir(parents=True)
    return tmp_path


def test_cpulist_format():
    assert parse_cpulist("0-3,8,10-11\n") == [0, 1, 2, 3, 8, 10, 11]
    assert parse_cpulist("5") == [5]


def test_default_is_the_interfaces_numa_node_one_worker_per_core(sysfs):
    assert numa_node("eth0", sysfs) == 1 and numa_node("veth0", sysfs) == -1
    every = set(range(8))
    assert assign(["eth0", "eth0", "eth1", "eth0"], allowed=every, sys=sysfs) == [4, 5, 0, 6]
    # A virtual interface belongs to every node: the first free cores.
    assert assign(["veth0", "veth0"], allowed=every, sys=sysfs) == [0, 1]
    # Only cores this process may use (taskset, cgroup cpuset).
    assert assign(["eth0", "eth0"], allowed={1, 5}, sys=sysfs) == [5, 1]


def test_node_full_spills_over_then_unpinned_never_shared(sysfs, caplog):
    with caplog.at_level(logging.WARNING, logger="lwaftr.placement"):
        got = assign(["eth0"] * 3, allowed={4, 5}, sys=sysfs)
    assert got == [4, 5, None]
    assert "runs unpinned" in caplog.text
    with caplog.at_level(logging.WARNING, logger="lwaftr.placement"):
        assert assign(["eth0"] * 2, allowed={4, 0}, sys=sysfs) == [4, 0]
    assert "another node" in caplog.text


def test_configured_cores_first_then_default(sysfs):
    every = set(range(8))
    assert assign(["eth0", "eth0", "eth0"], (7, 4), allowed=every, sys=sysfs) == [7, 4, 5]
    with pytest.raises(PlacementError, match="cpu 4 is given twice"):
        assign(["eth0", "eth0"], (4, 4), allowed=every, sys=sysfs)
    with pytest.raises(PlacementError, match="cpu 9 .*not one this process may run on"):
        assign(["eth0"], (9,), allowed=every, sys=sysfs)


def test_cpu_leaf_list_in_both_formats():
    cfg = replace(example_config(), cpus=(3, 1))
    assert loads_snabb(dump_snabb(cfg)).cpus == (3, 1)
    for fmt in ("xml", "json"):
        assert loads_ietf(dumps_ietf(cfg, fmt), fmt=fmt).cpus == (3, 1)
    assert "cpu" not in dump_snabb(example_config())          # absent by default: plain Snabb text
    text = dump_snabb(cfg).replace("cpu 1;", "cpu 3;")
    with pytest.raises(ConfigError, match="cpu 3 is given twice") as e:
        loads_snabb(text, "x.conf")
    assert "x.conf:" in str(e.value) and "lwaftr/cpu" in str(e.value)


def test_run_refuses_a_core_it_may_not_use_naming_the_file():
    from lwaftr.cli.run import _placed

    with pytest.raises(ConfigError) as e:
        _placed([["--on-a-stick", "eth0"]], (65535,), "lw.conf")
    assert str(e.value).startswith("lw.conf: lwaftr/cpu: cpu 65535 (worker 0) is not one this process may run on")
