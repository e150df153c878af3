"""Reading and changing a running configuration through requests (sans I/O)."""
from __future__ import annotations

import ipaddress

import numpy as np

from lwaftr.bindingtable.table import BindingTable
from lwaftr.config.snabb import dump_snabb, loads_snabb
from lwaftr.examples import example_config
from lwaftr.mgmt.service import ConfigService, table_bindings

SW = "/softwire-config/binding-table/softwire"
NEW = "{ ipv4 192.0.2.3; psid 0; b4-ipv6 2001:db8:1::d; br-address 2001:db8:ffff::1; port-set { psid-length 0; } }"


def service() -> ConfigService:
    cfg = example_config()
    return ConfigService(cfg, BindingTable.build(cfg.bindings))


def ok(r):
    assert r.reply["ok"], r.reply
    return r


def err(r) -> str:
    assert not r.reply["ok"] and r.config is None, r.reply
    return r.reply["error"]


def owner(s: ConfigService, ip: str, port: int):
    hit = s.table.lookup(int(ipaddress.IPv4Address(ip)), port)
    return None if hit is None else str(ipaddress.IPv6Address(hit[0]))


def test_get_leaves_containers_and_softwires():
    s = service()
    assert ok(s.handle({"op": "get", "path": "/softwire-config/external-interface/mtu"})).reply["value"] == "1460"
    v = ok(s.handle({"op": "get", "path": "/softwire-config/internal-interface"})).reply["value"]
    assert "hairpinning true;" in v and "mtu 1500;" in v
    v = ok(s.handle({"op": "get", "path": f"{SW}[ipv4=192.0.2.1][psid=2]"})).reply["value"]
    assert "b4-ipv6 2001:db8:1::b;" in v and "psid-length 4;" in v
    assert ok(s.handle({"op": "get", "path": f"{SW}[ipv4=192.0.2.1][psid=2]/b4-ipv6"})).reply["value"] == "2001:db8:1::b"
    assert "no softwire" in err(s.handle({"op": "get", "path": f"{SW}[ipv4=192.0.2.1][psid=3]"}))
    assert "nothing at" in err(s.handle({"op": "get", "path": "/softwire-config/external-interface/nope"}))


def test_whole_configuration_round_trips_with_the_table():
    s = service()
    text = ok(s.handle({"op": "get-config"})).reply["text"]
    assert loads_snabb(text) == example_config()
    assert table_bindings(s.table) == example_config().bindings


def test_policy_change_is_a_validated_candidate():
    s = service()
    r = ok(s.handle({"op": "set", "path": "/softwire-config/external-interface/mtu", "value": "1500"}))
    assert r.config.external.mtu == 1500 and s.config.external.mtu == 1460     # applied by the caller
    assert "mtu" in err(s.handle({"op": "set", "path": "/softwire-config/external-interface/mtu", "value": "big"}))
    assert "restart" in err(s.handle({"op": "set", "path": "/softwire-config/instance[device=example]/queue[id=0]"
                                                          "/external-interface/ip", "value": "198.51.100.9"}))
    r = ok(s.handle({"op": "set", "path": "/softwire-config/external-interface/ingress-filter", "value": "ip"}))
    assert r.config.external.ingress_filter == "ip"
    # Absent containers (all defaults) are created; control-plane settings need a restart.
    assert "restart" in err(s.handle({"op": "set", "path": "/lwaftr/next-hop-cache-refresh-interval", "value": "2"}))
    r = ok(s.handle({"op": "set", "path": "/softwire-config/external-interface/error-rate-limiting/packets",
                     "value": "7"}))
    assert r.config.external.error_rate_limit_packets == 7


def test_softwires_added_changed_and_removed_in_place():
    s = service()
    assert owner(s, "192.0.2.3", 80) is None
    r = ok(s.handle({"op": "add", "path": SW, "value": NEW}))
    assert r.table_changed and r.config is None and r.reply["added"] == 1
    assert owner(s, "192.0.2.3", 80) == "2001:db8:1::d"
    ok(s.handle({"op": "set", "path": f"{SW}[ipv4=192.0.2.3][psid=0]/b4-ipv6", "value": "2001:db8:1::e"}))
    assert owner(s, "192.0.2.3", 80) == "2001:db8:1::e"
    # A whole entry as the value, written without a space between the closing braces.
    ok(s.handle({"op": "set", "path": f"{SW}[ipv4=192.0.2.3][psid=0]",
                 "value": "{ipv4 192.0.2.3; psid 0; b4-ipv6 2001:db8:1::f; br-address 2001:db8:ffff::1;"
                          " port-set { psid-length 0; }}"}))
    assert owner(s, "192.0.2.3", 80) == "2001:db8:1::f"
    ok(s.handle({"op": "remove", "path": f"{SW}[ipv4=192.0.2.3][psid=0]"}))
    assert owner(s, "192.0.2.3", 80) is None
    assert "no softwire" in err(s.handle({"op": "remove", "path": f"{SW}[ipv4=192.0.2.3][psid=0]"}))
    assert "cannot be changed" in err(s.handle({"op": "set", "path": f"{SW}[ipv4=192.0.2.1][psid=1]/psid",
                                                "value": "3"}))


def test_a_request_applies_all_or_nothing():
    s = service()
    before = (s.table.addr_tab.copy(), s.table.sw_tab.copy())
    batch = NEW + " { ipv4 192.0.2.1; psid 3; b4-ipv6 2001:db8:1::f; br-address 2001:db8:ffff::1;" \
                  " port-set { psid-length 6; } }"           # 192.0.2.1 has 4-bit PSIDs: refused
    assert "port-set layout" in err(s.handle({"op": "add", "path": SW, "value": batch}))
    assert np.array_equal(before[0], s.table.addr_tab) and np.array_equal(before[1], s.table.sw_tab)
    assert "already" in err(s.handle({"op": "add", "path": SW, "value": NEW.replace("192.0.2.3", "192.0.2.2")}))
    assert "missing 'b4-ipv6'" in err(s.handle({"op": "add", "path": SW, "value": NEW.replace(
        "b4-ipv6 2001:db8:1::d;", "")}))
    assert "restart" in err(s.handle({"op": "add", "path": "/softwire-config/instance", "value": "{ device x; }"}))
    assert np.array_equal(before[1], s.table.sw_tab)


def test_load_config_and_validate():
    s = service()
    cfg = example_config()
    cfg.external = type(cfg.external)(mtu=1400)
    text = dump_snabb(cfg)
    ok(s.handle({"op": "validate", "text": text}))
    r = ok(s.handle({"op": "load-config", "text": text}))
    assert r.config.external.mtu == 1400 and r.table.count == 3
    assert "mtu" in err(s.handle({"op": "validate", "text": text.replace("mtu 1400", "mtu x")}))
    assert "unknown op" in err(s.handle({"op": "frobnicate"}))


def test_batch_is_all_or_nothing():
    s = service()
    before = s.table.sw_tab.copy()
    r = s.handle({"op": "batch", "requests": [
        {"op": "add", "path": SW, "value": NEW},
        {"op": "set", "path": f"{SW}[ipv4=192.0.2.1][psid=1]/b4-ipv6", "value": "2001:db8:1::99"},
        {"op": "remove", "path": f"{SW}[ipv4=192.0.2.2][psid=0]"},
        {"op": "remove", "path": f"{SW}[ipv4=192.0.2.9][psid=0]"}]})          # refused: not there
    assert "batch request 3" in err(r) and "no softwire" in err(r)
    assert np.array_equal(before, s.table.sw_tab)
    assert owner(s, "192.0.2.1", 4096) == "2001:db8:1::a" and owner(s, "192.0.2.2", 80) == "2001:db8:1::c"
    assert "only softwire" in err(s.handle({"op": "batch", "requests": [
        {"op": "add", "path": SW, "value": NEW},
        {"op": "set", "path": "/softwire-config/external-interface/mtu", "value": "1500"}]}))
    assert owner(s, "192.0.2.3", 80) is None
    r = ok(s.handle({"op": "batch", "requests": [
        {"op": "remove", "path": f"{SW}[ipv4=192.0.2.2][psid=0]"},
        {"op": "add", "path": SW, "value": NEW}]}))
    assert r.table_changed and r.reply["applied"] == 2
    assert owner(s, "192.0.2.2", 80) is None and owner(s, "192.0.2.3", 80) == "2001:db8:1::d"
