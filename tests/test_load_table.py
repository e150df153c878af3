"""Starting from a compiled table: the configuration's rest is kept beside it."""
from __future__ import annotations

import os
import shutil

import numpy as np

from lwaftr.config.load import load_table

from conftest import VECTORS


def _copy(tmp_path):
    conf = tmp_path / "lw.conf"
    shutil.copy(VECTORS / "icmp_on_fail.conf", conf)
    return conf


def test_second_start_uses_the_compiled_table_and_the_saved_rest(tmp_path):
    conf = _copy(tmp_path)
    c1, t1 = load_table(conf)
    assert len(c1.bindings) == 12
    assert (tmp_path / "lw.conf.lwbt").exists() and (tmp_path / "lw.conf.lwbt.rest").exists()
    c2, t2 = load_table(conf)
    assert len(c2.bindings) == 0                      # not parsed again: the table is the binding table
    assert (c2.external, c2.internal, c2.instances) == (c1.external, c1.internal, c1.instances)
    assert np.array_equal(t1.sw_tab, t2.sw_tab) and np.array_equal(t1.addr_tab, t2.addr_tab)
    assert c2.source == str(conf)


def test_a_changed_source_is_parsed_again(tmp_path):
    conf = _copy(tmp_path)
    load_table(conf)
    text = conf.read_text().replace("ip 10.10.10.10;", "ip 10.10.10.11;")
    conf.write_text(text)
    st = os.stat(conf)
    os.utime(conf, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000_000))
    c, _ = load_table(conf)
    assert len(c.bindings) == 12 and c.instance.external.ip == bytes([10, 10, 10, 11])


def test_a_damaged_rest_file_falls_back_to_parsing(tmp_path):
    conf = _copy(tmp_path)
    load_table(conf)
    (tmp_path / "lw.conf.lwbt.rest").write_text("{not json")
    c, t = load_table(conf)
    assert len(c.bindings) == 12 and t.count == 12
