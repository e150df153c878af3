"""NETCONF over SSH (lwaftr netconf): framing, edits and filters offline, then live.

The live part (root) runs ``lwaftr run`` in a network namespace on two veth
pairs whose peers sit in a second namespace, and ``lwaftr netconf`` outside
them (it only talks to the control socket); ncclient is the client.
"""
from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from lxml import etree

from lwaftr.bindingtable.table import BindingTable
from lwaftr.config.model import ControlPlane, Instance as Inst, InterfaceAddresses, NextHop
from lwaftr.config.snabb import dump_snabb, loads_snabb
from lwaftr.examples import example_config
from lwaftr.mgmt.netconf import Instance, NetconfServer, softwire_changes
from lwaftr.mgmt.netconf_auth import UsersFile, hash_password, parse_users, verify_password
from lwaftr.mgmt.netconf_data import BR_NS, EXT_NS, STATE_NS, Schema
from lwaftr.mgmt.netconf_proto import BASE_10, BASE_11, NC, NCEVENT, NCM, NCN, NCWD, Framer, FramingError, frame
from lwaftr.mgmt.service import ConfigService

NCNS = NC
NS = {"nc": NC, "br": BR_NS, "lwx": EXT_NS, "lws": STATE_NS}
NCOP = f'xmlns:nc="{NC}"'


def bi(inner: str, name: str = "lwaftr") -> str:
    return (f'<config xmlns="{NC}"><br-instances xmlns="{BR_NS}"><binding><bind-instance><name>{name}</name>'
            f'{inner}</bind-instance></binding></br-instances></config>')


def entry(b4: str, ip: str, psid: int, plen: int, br: str = "2001:db8:ffff::1", op: str = "") -> str:
    attr = f' {NCOP} nc:operation="{op}"' if op else ""
    return (f"<binding-entry{attr}><binding-ipv6info>{b4}</binding-ipv6info><binding-ipv4-addr>{ip}"
            f"</binding-ipv4-addr><port-set><psid-len>{plen}</psid-len><psid>{psid}</psid></port-set>"
            f"<br-ipv6-addr>{br}</br-ipv6-addr></binding-entry>")


def mtu(value: int) -> str:
    return f'<external-interface xmlns="{EXT_NS}"><mtu>{value}</mtu></external-interface>'


# --- offline: framing -----------------------------------------------------------------------------

def test_framing_end_of_message_then_chunked():
    f = Framer()
    f.feed(b"<hello/>]]>]]>\n#4\n<rpc\n#3\n/>x\n##\n")
    assert f.next() == b"<hello/>"
    f.chunked = True                       # switched after the hello, before the rest is read
    assert f.next() == b"<rpc/>x"
    assert f.next() is None and f.pending() == 0
    for piece in (b"\n", b"#1", b"0\n0123456789", b"\n#", b"#\n"):     # byte by byte works too
        f.feed(piece)
    assert f.next() == b"0123456789"
    assert frame(b"abc", True) == b"\n#3\nabc\n##\n" and frame(b"abc", False) == b"abc]]>]]>"
    for bad in (b"x", b"\n#0\n", b"\n#abc\n", b"\n##\n", b"\n#12345678901\n", b"\n#\n"):
        g = Framer()
        g.chunked = True
        g.feed(bad)
        with pytest.raises(FramingError):
            g.next()


# --- offline: a server over a ConfigService -------------------------------------------------------

class FakeInstance(Instance):
    """The control socket's service in-process (applying candidates as the live loop does)."""

    def __init__(self, cfg=None):
        cfg = cfg or replace(example_config(), name=None)
        self.service = ConfigService(cfg, BindingTable.build(cfg.bindings))
        self.requests: list[dict] = []
        super().__init__("t", requester=self._request)

    def _request(self, req):
        self.requests.append(req)
        r = self.service.handle(req)
        if r.config is not None:
            self.service.adopt(r.config, r.table if r.table is not None else self.service.table)
        return r.reply

    def counters(self):
        return {"out-ipv6-packets": 7, "drop-no-dest-softwire-ipv4-packets": 2}, 1_000_000_000.0

    def text(self) -> str:
        return self.service.text()


_SCHEMA = None


def server() -> tuple[NetconfServer, FakeInstance]:
    global _SCHEMA
    _SCHEMA = _SCHEMA or Schema()
    inst = FakeInstance()
    return NetconfServer(inst, _SCHEMA), inst


def session(srv: NetconfServer, base11: bool = True):
    s = srv.open_session("tester")
    caps = f"<capability>{BASE_11 if base11 else BASE_10}</capability>"
    srv.client_hello(s, f'<hello xmlns="{NC}"><capabilities>{caps}</capabilities></hello>'.encode())
    return s


def rpc(srv, s, body: str, mid: str = "7") -> etree._Element:
    out = srv.handle(s, f'<rpc message-id="{mid}" xmlns="{NC}">{body}</rpc>'.encode())
    return etree.fromstring(out)


def edit(srv, s, config: str, target: str = "running", extra: str = "") -> etree._Element:
    return rpc(srv, s, f"<edit-config><target><{target}/></target>{extra}{config}</edit-config>")


def ok(r: etree._Element) -> etree._Element:
    assert r.find("nc:ok", NS) is not None or r.find("nc:data", NS) is not None, etree.tostring(r).decode()
    return r


def error(r: etree._Element) -> dict[str, str]:
    e = r.find("nc:rpc-error", NS)
    assert e is not None, etree.tostring(r).decode()
    return {etree.QName(c).localname: (c.text or "") + " ".join(i.text or "" for i in c) for c in e}


def config_of(srv, s, flt: str = "", source: str = "running") -> etree._Element:
    f = f"<filter>{flt}</filter>" if flt else ""
    return ok(rpc(srv, s, f"<get-config><source><{source}/></source>{f}</get-config>")).find("nc:data", NS)


def text_at(data: etree._Element, path: str) -> list[str]:
    return [e.text for e in data.xpath(path, namespaces=NS)]


BIP = "br:br-instances/br:binding/br:bind-instance"


def test_get_config_filters_and_get_state():
    srv, _ = server()
    s = session(srv)
    data = config_of(srv, s)
    assert text_at(data, "br:br-instances/br:binding/br:bind-instance/br:name") == ["lwaftr"]
    assert len(data.xpath("//br:binding-entry", namespaces=NS)) == 3
    # selection, containment and content-match nodes; list entries keep their keys
    flt = (f'<br-instances xmlns="{BR_NS}"><binding><bind-instance><softwire-payload-mtu/><binding-table>'
           f'<binding-entry><binding-ipv4-addr>192.0.2.1</binding-ipv4-addr><br-ipv6-addr/></binding-entry>'
           f'</binding-table></bind-instance></binding></br-instances>')
    data = config_of(srv, s, flt)
    assert text_at(data, "//br:softwire-payload-mtu") == ["1460"]
    assert text_at(data, "//br:binding-entry/br:binding-ipv6info") == ["2001:db8:1::a", "2001:db8:1::b"]
    assert data.xpath("//br:port-set", namespaces=NS) == [] and data.xpath("//lwx:mtu", namespaces=NS) == []
    # a content match alone selects the whole entry; a failing one selects nothing
    data = config_of(srv, s, f'<br-instances xmlns="{BR_NS}"><binding><bind-instance><binding-table><binding-entry>'
                             f'<binding-ipv6info>2001:DB8:1:0::c</binding-ipv6info></binding-entry></binding-table>'
                             f'</bind-instance></binding></br-instances>')
    assert text_at(data, "//br:psid-len") == ["0"]
    assert len(config_of(srv, s, f'<br-instances xmlns="{BR_NS}"><binding><bind-instance><name>nope</name>'
                                 f'</bind-instance></binding></br-instances>')) == 0
    assert len(config_of(srv, s, '<whatever xmlns="urn:nothing"/>')) == 0
    # get: configuration and state, RFC 8676 traffic-stat and the per-reason counters
    data = ok(rpc(srv, s, "<get/>")).find("nc:data", NS)
    assert text_at(data, "//br:traffic-stat/br:sent-ipv6-packets") == ["7"]
    assert text_at(data, "//br:traffic-stat/br:active-softwire-num") == ["3"]
    assert text_at(data, "//br:traffic-stat/br:discontinuity-time") == ["2001-09-09T01:46:40Z"]
    assert text_at(data, "//lws:softwire-state/lws:drop-no-dest-softwire-ipv4-packets") == ["2"]
    data = ok(rpc(srv, s, f'<get><filter type="subtree"><br-instances xmlns="{BR_NS}"><binding><bind-instance>'
                          f'<softwire-state xmlns="{STATE_NS}"><out-ipv6-packets/></softwire-state>'
                          f'</bind-instance></binding></br-instances></filter></get>')).find("nc:data", NS)
    assert text_at(data, "//lws:out-ipv6-packets") == ["7"] and text_at(data, "//br:name") == ["lwaftr"]
    assert len(data.xpath("//lws:softwire-state/*", namespaces=NS)) == 1
    assert error(rpc(srv, s, '<get><filter type="xpath" select="/"/></get>'))["error-tag"] == \
        "operation-not-supported"


def whole_table_fetched(inst: FakeInstance, since: int) -> bool:
    return any(r["op"] == "get-config" and r.get("bindings", True) for r in inst.requests[since:])


def test_reads_and_edits_by_key_touch_only_their_entries():
    """Names, one entry by key or IPv4 address, and edits of entries by key never
    fetch the whole table; the rest of the configuration is fetched again only
    when it changed (generation)."""
    srv, inst = server()
    s = session(srv)
    names = f'<br-instances xmlns="{BR_NS}"><binding><bind-instance><name/></bind-instance></binding></br-instances>'
    n = len(inst.requests)
    data = config_of(srv, s, names)
    assert text_at(data, "//br:name") == ["lwaftr"] and not data.xpath("//br:binding-entry", namespaces=NS)
    data = config_of(srv, s, names)
    assert inst.requests[-1] == {"op": "get-config", "bindings": False, "if_generation": srv._rest[0]}
    by_key = (f'<br-instances xmlns="{BR_NS}"><binding><bind-instance><binding-table><binding-entry>'
              f'<binding-ipv6info>2001:db8:1::b</binding-ipv6info></binding-entry></binding-table></bind-instance>'
              f'</binding></br-instances>')
    data = config_of(srv, s, by_key)
    assert text_at(data, "//br:binding-ipv4-addr") == ["192.0.2.1"] and text_at(data, "//br:psid") == ["2"]
    # add one, change its PSID, delete it: each a batch of its own changes
    ok(edit(srv, s, bi(f"<binding-table>{entry('2001:db8:9::1', '203.0.113.9', 1, 2)}</binding-table>")))
    ok(edit(srv, s, bi("<binding-table><binding-entry><binding-ipv6info>2001:db8:9::1</binding-ipv6info>"
                       "<port-set><psid>3</psid></port-set></binding-entry></binding-table>")))
    assert [r["op"] for r in inst.requests[-1]["requests"]] == ["remove", "add"]
    assert "psid 3;" in inst.service.handle({"op": "get", "path": "/softwire-config/binding-table/softwire"
                                             "[ipv4=203.0.113.9][psid=3]"}).reply["value"]
    data = ok(rpc(srv, s, f"<get><filter>{by_key.replace('2001:db8:1::b', '2001:db8:9::1')}</filter></get>")) \
        .find("nc:data", NS)
    assert text_at(data, "//br:psid") == ["3"]
    data = ok(rpc(srv, s, f'<get><filter><br-instances xmlns="{BR_NS}"><binding><bind-instance><traffic-stat>'
                          f'<active-softwire-num/></traffic-stat></bind-instance></binding></br-instances></filter>'
                          f'</get>')).find("nc:data", NS)
    assert text_at(data, "//br:active-softwire-num") == ["4"]
    ok(edit(srv, s, bi(f'<binding-table><binding-entry {NCOP} nc:operation="delete"><binding-ipv6info>'
                       f'2001:db8:9::1</binding-ipv6info></binding-entry></binding-table>')))
    assert inst.service.table.count == 3
    # refused by the table's own rules (the neighbours' port-set layout): nothing changed
    e = error(edit(srv, s, bi(f"<binding-table>{entry('2001:db8:9::2', '192.0.2.1', 3, 6)}</binding-table>")))
    assert e["error-tag"] == "operation-failed" and "port-set layout" in e["error-message"]
    assert not whole_table_fetched(inst, n) and inst.service.table.count == 3
    # the whole configuration: written page by page from the instance (the same as the old way)
    import lwaftr.mgmt.netconf as ncmod
    ncmod.PAGE, page = 2, ncmod.PAGE
    try:
        streamed = srv.handle_stream(s, f'<rpc message-id="9" xmlns="{NC}"><get-config><source><running/>'
                                        f'</source></get-config></rpc>'.encode())
        pieces = list(streamed)
    finally:
        ncmod.PAGE = page
    assert len(pieces) == 4 and not whole_table_fetched(inst, n)        # head, two pages, tail
    assert [r.get("from") for r in inst.requests if r["op"] == "softwires" and "from" in r][-2:] != [None, None]
    data = etree.fromstring(b"".join(pieces)).find("nc:data", NS)
    want = srv.schema.filter(srv._running()[1], None)
    def entries_of(d):                  # (the list is ordered by the system: table order here)
        return sorted(etree.tostring(e, method="c14n") for e in d.xpath("//br:binding-entry", namespaces=NS))
    assert len(entries_of(data)) == 3 and entries_of(data) == entries_of(want)
    assert ncmod._without_entries(data) == ncmod._without_entries(want)
    data = ok(rpc(srv, s, "<get/>")).find("nc:data", NS)
    assert text_at(data, "//br:traffic-stat/br:active-softwire-num") == ["3"]
    assert len(data.xpath("//br:binding-entry", namespaces=NS)) == 3
    # a filter selecting every entry's key works the whole way
    data = config_of(srv, s, f'<br-instances xmlns="{BR_NS}"><binding><bind-instance><binding-table><binding-entry>'
                             f'<binding-ipv6info/></binding-entry></binding-table></bind-instance></binding>'
                             f'</br-instances>')
    assert len(data.xpath("//br:binding-ipv6info", namespaces=NS)) == 3 and whole_table_fetched(inst, n)


def test_edit_operations_and_all_or_nothing():
    srv, inst = server()
    s = session(srv)
    sw = "/softwire-config/binding-table/softwire"
    # merge a new entry: one batch holding one add request, in place
    ok(edit(srv, s, bi(f"<binding-table>{entry('2001:db8:9::1', '203.0.113.9', 0, 0)}</binding-table>")))
    last = inst.requests[-1]
    assert last["op"] == "batch" and [r["op"] for r in last["requests"]] == ["add"]
    assert "203.0.113.9" in last["requests"][0]["value"]
    # create of an existing entry: data-exists; delete of a missing one: data-missing
    e = error(edit(srv, s, bi(f"<binding-table>{entry('2001:db8:9::1', '203.0.113.9', 0, 0, op='create')}"
                              "</binding-table>")))
    assert e["error-tag"] == "data-exists" and "[br:binding-ipv6info='2001:db8:9::1']" not in e["error-path"]
    assert "binding-entry[softwire-br:binding-ipv6info='2001:db8:9::1']" in e["error-path"]
    e = error(edit(srv, s, bi(f'<binding-table><binding-entry {NCOP} nc:operation="delete"><binding-ipv6info>'
                              f'2001:db8:9::2</binding-ipv6info></binding-entry></binding-table>')))
    assert e["error-tag"] == "data-missing"
    # remove of a missing one is fine and changes nothing
    n = len(inst.requests)
    ok(edit(srv, s, bi(f'<binding-table><binding-entry {NCOP} nc:operation="remove"><binding-ipv6info>'
                       f'2001:db8:9::2</binding-ipv6info></binding-entry></binding-table>')))
    # (read: the configuration without softwires, and the one softwire by its key; nothing changed)
    assert [(r["op"], r.get("bindings", True)) for r in inst.requests[n:]] == [("get-config", False),
                                                                               ("softwires", True)]
    # a new B4 address for the same port set: set in place (the key is written another way)
    ok(edit(srv, s, bi(f'<binding-table><binding-entry {NCOP} nc:operation="delete"><binding-ipv6info>'
                       f'2001:DB8:9:0::1</binding-ipv6info></binding-entry>'
                       f"{entry('2001:db8:9::5', '203.0.113.9', 0, 0)}</binding-table>")))
    assert [(r["op"], r["path"]) for r in inst.requests[-1]["requests"]] == \
        [("set", f"{sw}[ipv4=203.0.113.9][psid=0]")]
    assert "b4-ipv6 2001:db8:9::5;" in inst.text()
    # a change of port-set layout: removed and added again
    ok(edit(srv, s, bi(f"<binding-table>{entry('2001:db8:9::5', '203.0.113.9', 3, 2, op='replace')}"
                       "</binding-table>")))
    assert [r["op"] for r in inst.requests[-1]["requests"]] == ["remove", "add"]
    # a policy leaf: one load-config; default-operation none with a merge below it
    ok(edit(srv, s, bi(mtu(1400))))
    assert inst.requests[-1]["op"] == "load-config" and inst.service.config.external.mtu == 1400
    ok(edit(srv, s, bi(f'<external-interface xmlns="{EXT_NS}"><mtu {NCOP} nc:operation="merge">1300</mtu>'
                       f'<mru>9</mru></external-interface>'), extra="<default-operation>none</default-operation>"))
    assert inst.service.config.external.mtu == 1300 and inst.service.config.external.mru == 1460
    # invalid: the error names the node with its keys; nothing reaches the instance
    before, n = inst.text(), len(inst.requests)
    e = error(edit(srv, s, bi("<binding-table><binding-entry><binding-ipv6info>2001:db8:1::b</binding-ipv6info>"
                              "<port-set><psid>99</psid></port-set></binding-entry></binding-table>" + mtu(1200))))
    assert e["error-tag"] == "invalid-value" and "psid 99" in e["error-message"]
    assert e["error-path"].endswith("binding-entry[softwire-br:binding-ipv6info='2001:db8:1::b']"
                                    "/softwire-br:port-set/softwire-br:psid")
    e = error(edit(srv, s, bi(mtu(70000))))
    assert e["error-path"].endswith("/lwx:external-interface/lwx:mtu") and "70000" in e["error-message"]
    e = error(edit(srv, s, bi(f'<external-interface xmlns="{EXT_NS}"><mtuu>1</mtuu></external-interface>')))
    assert e["error-tag"] == "unknown-element" and e["error-info"] == "mtuu" and "mtuu" in e["error-message"]
    e = error(edit(srv, s, bi(f'<traffic-stat><sent-ipv4-packets>1</sent-ipv4-packets></traffic-stat>')))
    assert "state data" in e["error-message"]
    e = error(edit(srv, s, bi("<binding-table><binding-entry><binding-ipv4-addr>1.2.3.4</binding-ipv4-addr>"
                              "</binding-entry></binding-table>")))
    assert e["error-tag"] == "missing-element"
    e = error(edit(srv, s, bi(f'<binding-table><binding-table-file xmlns="{EXT_NS}">/etc/passwd'
                              f'</binding-table-file></binding-table>')))
    assert e["error-tag"] == "operation-not-supported"
    # needs a restart: refused by name, nothing changed
    e = error(edit(srv, s, bi(f'<instance xmlns="{EXT_NS}"><device>example</device><queue><id>0</id>'
                              f'<external-interface><ip>198.51.100.77</ip></external-interface></queue></instance>')))
    assert e["error-tag"] == "operation-failed" and "restart" in e["error-message"]
    assert e["error-path"].endswith("/lwx:instance")
    assert inst.text() == before and all(r["op"] in ("get-config", "softwires") for r in inst.requests[n:])
    # choice: a next-hop MAC replaces the next-hop IP; test-only changes nothing
    nh = (f'<instance xmlns="{EXT_NS}"><device>example</device><queue><id>0</id><external-interface><next-hop>'
          f'<ip>198.51.100.2</ip></next-hop></external-interface></queue></instance>')
    tree = srv._running()[1]
    srv.schema.edit(tree, etree.fromstring(bi(nh)))
    assert tree.xpath("//lwx:queue/lwx:external-interface/lwx:next-hop/*", namespaces=NS)[0].tag.endswith("}ip")
    assert len(tree.xpath("//lwx:queue/lwx:external-interface/lwx:next-hop/*", namespaces=NS)) == 1
    ok(edit(srv, s, bi(mtu(1000)), extra="<test-option>test-only</test-option>"))
    assert inst.service.config.external.mtu == 1300
    # the table's version is kept by the instance and shown again
    ok(edit(srv, s, bi("<binding-table-versioning><version>42</version></binding-table-versioning>")))
    assert text_at(config_of(srv, s), BIP + "/br:binding-table-versioning/br:version") == ["42"]


def test_confirmed_commit_rolls_back_unless_confirmed():
    srv, inst = server()
    a, b = session(srv), session(srv)
    # confirmed, then not confirmed in time: rolled back
    ok(edit(srv, a, bi(mtu(1300)), target="candidate"))
    ok(rpc(srv, a, "<commit><confirmed/><confirm-timeout>5</confirm-timeout></commit>"))
    assert inst.service.config.external.mtu == 1300
    srv.tick(time.monotonic() + 1)
    assert inst.service.config.external.mtu == 1300
    assert error(rpc(srv, b, "<commit/>"))["error-tag"] == "in-use"      # another session cannot confirm it
    srv.tick(time.monotonic() + 6)
    assert inst.service.config.external.mtu == 1460 and srv.pending is None
    # confirmed, then confirmed by a plain commit: kept
    ok(edit(srv, a, bi(mtu(1310)), target="candidate"))
    ok(rpc(srv, a, "<commit><confirmed/></commit>"))
    ok(rpc(srv, a, "<commit/>"))
    srv.tick(time.monotonic() + 10_000)
    assert inst.service.config.external.mtu == 1310
    # the session ends before confirming: rolled back
    c = session(srv)
    ok(edit(srv, c, bi(mtu(1320)), target="candidate"))
    ok(rpc(srv, c, "<commit><confirmed/></commit>"))
    srv.end_session(c)
    assert inst.service.config.external.mtu == 1310
    # persist: any session confirms or cancels with the persist-id; softwires roll back too
    ok(edit(srv, a, bi(f"<binding-table>{entry('2001:db8:9::1', '203.0.113.9', 0, 0)}</binding-table>"),
            target="candidate"))
    ok(rpc(srv, a, "<commit><confirmed/><persist>tok</persist></commit>"))
    assert inst.service.table.count == 4
    srv.end_session(a)
    assert inst.service.table.count == 4
    assert error(rpc(srv, b, "<cancel-commit><persist-id>nope</persist-id></cancel-commit>"))["error-tag"] == \
        "invalid-value"
    ok(rpc(srv, b, "<cancel-commit><persist-id>tok</persist-id></cancel-commit>"))
    assert inst.service.table.count == 3 and srv.pending is None
    assert error(rpc(srv, b, "<cancel-commit/>"))["error-tag"] == "operation-failed"


def test_get_schema_and_with_defaults():
    srv, inst = server()
    s = session(srv)
    caps = srv.capabilities()
    assert "urn:ietf:params:netconf:capability:confirmed-commit:1.1" in caps
    assert "urn:ietf:params:netconf:capability:with-defaults:1.0?basic-mode=report-all" in caps
    assert any(c.startswith(f"{NCM}?module=ietf-netconf-monitoring") for c in caps)
    r = rpc(srv, s, f'<get-schema xmlns="{NCM}"><identifier>ietf-softwire-br</identifier>'
                    f'<version>2019-11-16</version><format>yang</format></get-schema>')
    text = r.find(f"{{{NCM}}}data").text
    assert text.lstrip().startswith("module ietf-softwire-br") and "binding-entry" in text
    r = rpc(srv, s, f'<get-schema xmlns="{NCM}"><identifier>lwaftr-softwire-state</identifier></get-schema>')
    assert "drop-no-dest-softwire-ipv4-packets" in r.find(f"{{{NCM}}}data").text
    e = error(rpc(srv, s, f'<get-schema xmlns="{NCM}"><identifier>ietf-interfaces</identifier></get-schema>'))
    assert e["error-tag"] == "invalid-value"
    # with-defaults: report-all, the only basic mode (every value is reported)
    data = ok(rpc(srv, s, f'<get-config><source><running/></source><with-defaults xmlns="{NCWD}">report-all'
                          f'</with-defaults></get-config>')).find("nc:data", NS)
    assert text_at(data, "//br:softwire-num-max") == ["4294967295"]
    e = error(rpc(srv, s, f'<get><with-defaults xmlns="{NCWD}">trim</with-defaults></get>'))
    assert e["error-tag"] == "invalid-value" and "report-all" in e["error-message"]


def test_read_only_group_reads_and_is_refused_changes():
    from lwaftr.mgmt.netconf_auth import parse_users
    users = parse_users("viewer:group read-only\nadmin:ssh-ed25519 "
                        "AAAAC3NzaC1lZDI1NTE5AAAAIFx5Vz0gq4Z6e9mHhE6cJpX0ykTqTZbB5n8vE0Jt0b1C\n")
    assert users["viewer"].group == "read-only" and users["admin"].group == "read-write"
    with pytest.raises(ValueError, match=r"<users>:1: unknown group 'admins'"):
        parse_users("x:group admins")
    inst = FakeInstance()
    srv = NetconfServer(inst, _SCHEMA or Schema(), group=lambda u: users[u].group if u in users else "read-only")
    v = srv.open_session("viewer")
    srv.client_hello(v, f'<hello xmlns="{NC}"><capabilities><capability>{BASE_11}</capability></capabilities>'
                        f'</hello>'.encode())
    assert text_at(config_of(srv, v), "//br:name") == ["lwaftr"]
    ok(rpc(srv, v, "<get/>"))
    ok(rpc(srv, v, "<validate><source><running/></source></validate>"))
    for body in (f"<edit-config><target><running/></target>{bi(mtu(1400))}</edit-config>",
                 "<lock><target><running/></target></lock>", "<commit/>", "<discard-changes/>",
                 "<copy-config><target><candidate/></target><source><running/></source></copy-config>",
                 "<kill-session><session-id>99</session-id></kill-session>"):
        e = error(rpc(srv, v, body))
        assert e["error-tag"] == "access-denied" and "read-only" in e["error-message"], body
    assert inst.service.config.external.mtu == 1460
    a = srv.open_session("admin")
    srv.client_hello(a, f'<hello xmlns="{NC}"><capabilities><capability>{BASE_11}</capability></capabilities>'
                        f'</hello>'.encode())
    ok(edit(srv, a, bi(mtu(1400))))
    assert inst.service.config.external.mtu == 1400


def test_notifications_of_configuration_changes():
    srv, inst = server()
    a, b = session(srv), session(srv)
    got: list[etree._Element] = []
    b.notify = lambda msg: got.append(etree.fromstring(msg))
    a.notify = lambda msg: pytest.fail("a did not subscribe")
    ok(rpc(srv, b, f'<create-subscription xmlns="{NCEVENT}"/>'))
    assert error(rpc(srv, b, f'<create-subscription xmlns="{NCEVENT}"/>'))["error-tag"] == "operation-failed"
    e = error(rpc(srv, a, f'<create-subscription xmlns="{NCEVENT}"><startTime>2026-01-01T00:00:00Z</startTime>'
                          f'</create-subscription>'))
    assert e["error-tag"] == "operation-failed" and "replay" in e["error-message"]
    ok(edit(srv, a, bi(f"<binding-table>{entry('2001:db8:9::1', '203.0.113.9', 0, 0)}</binding-table>")))
    ok(edit(srv, a, bi(mtu(1400))))
    ok(edit(srv, a, bi(f'<binding-table><binding-entry {NCOP} nc:operation="delete"><binding-ipv6info>'
                       f'2001:db8:9::1</binding-ipv6info></binding-entry></binding-table>')))
    ok(edit(srv, a, bi(mtu(1400))))                     # no change: no notification
    ns = {"n": NCEVENT, "c": NCN}
    assert len(got) == 3
    assert [g.findtext("c:netconf-config-change/c:changed-by/c:username", namespaces=ns) for g in got] == \
        ["tester"] * 3
    assert got[0].findtext("c:netconf-config-change/c:datastore", namespaces=ns) == "running"
    assert [e.findtext("c:operation", namespaces=ns) for e in got[0].iterfind(".//c:edit", ns)] == ["create"]
    assert "binding-ipv6info='2001:db8:9::1'" in got[0].findtext(".//c:edit/c:target", namespaces=ns)
    assert got[1].find(".//c:edit", ns) is None                          # a whole-configuration change
    assert [e.findtext("c:operation", namespaces=ns) for e in got[2].iterfind(".//c:edit", ns)] == ["delete"]
    assert got[0].findtext("n:eventTime", namespaces=ns).endswith("Z")


def test_alarm_notifications(tmp_path, monkeypatch):
    """Alarms a worker raises and clears (its alarms.json) are notified to subscribers."""
    import json
    monkeypatch.setenv("LWAFTR_RUN_DIR", str(tmp_path))
    srv, inst = server()
    s = session(srv)
    got: list[etree._Element] = []
    s.notify = lambda msg: got.append(etree.fromstring(msg))
    ok(rpc(srv, s, f'<create-subscription xmlns="{NCEVENT}"/>'))
    w1 = tmp_path / "t" / "workers" / "1"
    w1.mkdir(parents=True)
    (w1 / "alarms.json").write_text(json.dumps({"next-hop-unresolved": "IPv4 next hop 198.51.100.2 unresolved"}))
    srv.tick()                              # (the first look: what is raised already is not news)
    assert got == []
    (w1 / "alarms.json").write_text("{}")
    (tmp_path / "t" / "alarms.json").write_text(json.dumps({"icmp-rate-limit": "ICMP errors limited"}))
    srv.tick()
    ns = {"a": STATE_NS}
    seen = sorted((g.findtext(".//a:worker", namespaces=ns), g.findtext(".//a:name", namespaces=ns),
                   g.findtext(".//a:state", namespaces=ns)) for g in got)
    assert seen == [("0", "icmp-rate-limit", "raised"), ("1", "next-hop-unresolved", "cleared")]
    assert any(g.findtext(".//a:text", namespaces=ns) == "ICMP errors limited" for g in got)
    srv.tick()
    assert len(got) == 2
    r = rpc(srv, s, f'<get-schema xmlns="{NCM}"><identifier>lwaftr-softwire-state</identifier></get-schema>')
    assert "notification alarm" in r.find(f"{{{NCM}}}data").text


def test_malformed_messages_and_rpc_errors():
    srv, inst = server()
    s = session(srv)
    e = error(etree.fromstring(srv.handle(s, b"<rpc message-id='1' xmlns='" + NC.encode() + b"'><get-config>")))
    assert e["error-tag"] == "malformed-message" and e["error-type"] == "rpc"
    e = error(etree.fromstring(srv.handle(s, b'<!DOCTYPE x [<!ENTITY a "b">]><rpc/>')))
    assert e["error-tag"] == "malformed-message"
    old = session(srv, base11=False)             # base:1.0 has no malformed-message
    assert error(etree.fromstring(srv.handle(old, b"<oops")))["error-tag"] == "operation-failed"
    r = etree.fromstring(srv.handle(s, f'<rpc xmlns="{NC}"><get/></rpc>'.encode()))
    assert error(r)["error-tag"] == "missing-attribute"
    r = rpc(srv, s, "<frobnicate/>", mid="x1")
    assert r.get("message-id") == "x1" and error(r)["error-tag"] == "operation-not-supported"
    assert error(rpc(srv, s, "<get-config><source><startup/></source></get-config>"))["error-tag"] == \
        "operation-not-supported"
    assert error(rpc(srv, s, "<get-config/>"))["error-tag"] == "missing-element"
    assert error(edit(srv, s, bi(mtu(1)).replace("<mtu>", f'<mtu {NCOP} nc:operation="frob">')))["error-tag"] == \
        "bad-attribute"


def test_candidate_locks_and_sessions():
    srv, inst = server()
    a, b = session(srv), session(srv)
    # candidate: edits stay there until commit; discard-changes drops them
    ok(edit(srv, a, bi(mtu(1234)), target="candidate"))
    assert text_at(config_of(srv, a, source="candidate"), "//lwx:external-interface/lwx:mtu") == ["1234"]
    assert text_at(config_of(srv, a), "//lwx:external-interface/lwx:mtu") == ["1460"]
    assert error(rpc(srv, b, "<lock><target><candidate/></target></lock>"))["error-tag"] == "lock-denied"
    ok(rpc(srv, b, "<discard-changes/>"))
    assert text_at(config_of(srv, a, source="candidate"), "//lwx:external-interface/lwx:mtu") == ["1460"]
    ok(edit(srv, a, bi(mtu(1235)), target="candidate"))
    ok(rpc(srv, a, "<validate><source><candidate/></source></validate>"))
    ok(rpc(srv, a, "<commit/>"))
    assert inst.service.config.external.mtu == 1235
    # an invalid candidate (test-option set skips validation) is refused at commit, running untouched
    ok(edit(srv, a, bi(mtu(1)).replace("<mtu>1<", "<mtu>x<"), target="candidate",
            extra="<test-option>set</test-option>"))
    assert error(rpc(srv, a, "<validate><source><candidate/></source></validate>"))["error-tag"] == "invalid-value"
    assert error(rpc(srv, a, "<commit/>"))["error-path"].endswith("lwx:mtu")
    assert inst.service.config.external.mtu == 1235
    ok(rpc(srv, a, "<discard-changes/>"))
    # locks: another session's edits, locks and commits are refused
    ok(rpc(srv, a, "<lock><target><running/></target></lock>"))
    e = error(edit(srv, b, bi(mtu(1300))))
    assert e["error-tag"] == "lock-denied" and e["error-info"] == str(a.id)
    assert error(rpc(srv, b, "<lock><target><running/></target></lock>"))["error-tag"] == "lock-denied"
    assert error(rpc(srv, b, "<unlock><target><running/></target></lock>".replace("</lock>", "</unlock>")))[
        "error-tag"] == "operation-failed"
    ok(edit(srv, a, bi(mtu(1301))))
    # the lock goes with the session: kill-session (not oneself), then b may edit
    assert error(rpc(srv, a, f"<kill-session><session-id>{a.id}</session-id></kill-session>"))["error-tag"] == \
        "invalid-value"
    ok(rpc(srv, b, f"<kill-session><session-id>{a.id}</session-id></kill-session>"))
    assert not a.alive and srv.handle(a, b"<rpc/>") is None
    ok(edit(srv, b, bi(mtu(1302))))
    assert inst.service.config.external.mtu == 1302
    ok(rpc(srv, b, "<close-session/>"))
    assert b.closing


def test_copy_config_validate_inline_and_undo_on_refusal():
    srv, inst = server()
    s = session(srv)
    whole = etree.tostring(config_of(srv, s)).decode()
    whole = whole.replace("<data ", "<config ").replace("</data>", "</config>").replace("<mtu>1460</mtu>", "<mtu>1280</mtu>", 1)
    ok(rpc(srv, s, f"<validate><source>{whole}</source></validate>"))
    assert error(rpc(srv, s, f"<validate><source>{whole.replace('<mtu>1280', '<mtu>-1')}</source></validate>"))[
        "error-tag"] == "invalid-value"
    ok(rpc(srv, s, f"<copy-config><target><candidate/></target><source>{whole}</source></copy-config>"))
    assert inst.service.config.external.mtu == 1460
    ok(rpc(srv, s, "<copy-config><target><running/></target><source><candidate/></source></copy-config>"))
    assert inst.service.config.external.mtu == 1280
    assert error(rpc(srv, s, "<delete-config><target><candidate/></target></delete-config>"))["error-tag"] == \
        "operation-not-supported"
    # the instance refuses a batch (its last request): nothing of it is applied
    before = inst.text()
    real = inst._request
    inst._requester = lambda req: {"ok": False, "error": "no room"} if req["op"] == "batch" and any(
        "9::9" in r.get("value", "") for r in req["requests"]) else real(req)
    e = error(edit(srv, s, bi(f'<binding-table><binding-entry {NCOP} nc:operation="delete"><binding-ipv6info>'
                              f'2001:db8:1::c</binding-ipv6info></binding-entry>'
                              f"{entry('2001:db8:9::9', '203.0.113.9', 0, 0)}</binding-table>")))
    assert e["error-tag"] == "operation-failed" and "no room" in e["error-message"]
    assert inst.text() == before
    # a client hello with a session-id, or without base capabilities, is refused
    from lwaftr.mgmt.netconf_proto import MalformedMessage
    for bad in (f'<hello xmlns="{NC}"><capabilities><capability>{BASE_11}</capability></capabilities>'
                f'<session-id>4</session-id></hello>',
                f'<hello xmlns="{NC}"><capabilities><capability>urn:x</capability></capabilities></hello>'):
        with pytest.raises(MalformedMessage):
            srv.client_hello(srv.open_session("x"), bad.encode())


def test_softwire_changes_and_users_file(tmp_path):
    cfg = example_config()
    b = cfg.bindings
    n = replace(b, b4_ipv6=b.b4_ipv6.copy(), psid_length=b.psid_length.copy())
    n.b4_ipv6[0, 15] = 0xEE                 # alice moves: set in place
    removes, sets, adds = softwire_changes(b, n)
    assert (len(removes), len(sets), len(adds)) == (0, 1, 0)
    assert softwire_changes(b, b) == ([], [], [])
    # users: scrypt hashes and public keys, read again when the file changes
    h = hash_password("s3cret", ln=10)
    assert verify_password("s3cret", h) and not verify_password("s3cre", h) and not verify_password("x", "$1$x")
    import asyncssh
    key = asyncssh.generate_private_key("ssh-ed25519")
    f = tmp_path / "users"
    f.write_text(f"# users\nadmin:{h}\nops:{key.export_public_key().decode().strip()}\n")
    users = UsersFile(f)
    assert users.check_password("admin", "s3cret") and not users.check_password("admin", "nope")
    assert not users.check_password("ops", "s3cret") and not users.check_password("nobody", "s3cret")
    assert users.check_key("ops", key.convert_to_public()) and not users.check_key("admin", key.convert_to_public())
    f.write_text(f"other:{h}\n")
    os.utime(f, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    assert not users.check_password("admin", "s3cret") and users.check_password("other", "s3cret")
    for bad in ("admin", "admin:$1$abc", "admin:ssh-rsa notbase64"):
        with pytest.raises(ValueError):
            parse_users(bad)


# --- live -----------------------------------------------------------------------------------------

LW, PEER = f"lwaftr-ncl-{os.getpid()}", f"lwaftr-ncp-{os.getpid()}"
MAC4, MAC6 = "02:00:00:00:00:01", "02:00:00:00:00:02"
PEER4, PEER6 = "02:00:00:00:01:10", "02:00:00:00:01:20"
PASSWORD = "correct horse battery staple"

live = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and iproute2")


def sh(*cmd: str, ns: str | None = None, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    full = (["ip", "netns", "exec", ns] if ns else []) + list(cmd)
    return subprocess.run(full, check=check, capture_output=True, text=True, timeout=timeout)


def _mac(s: str) -> bytes:
    return bytes.fromhex(s.replace(":", ""))


def live_config() -> str:
    inst = Inst(device="b1", external_device="i1", queue_id=0,
                external=InterfaceAddresses(ipaddress.IPv4Address("198.51.100.1").packed, _mac(MAC4),
                                            NextHop(mac=_mac(PEER4))),
                internal=InterfaceAddresses(ipaddress.IPv6Address("2001:db8:0:1::1").packed, _mac(MAC6),
                                            NextHop(mac=_mac(PEER6))))
    return dump_snabb(replace(example_config(), instances=[inst], name=None,
                              control_plane=ControlPlane(mode="built-in")))


#: Sent from the peer namespace: Internet -> DST port 4100 on i0, wait for it tunnelled on b0;
#: prints the IPv6 destination (the B4) of what came back, or "nothing".
PROBE = r'''
import ipaddress, socket, sys, time
from lwaftr.examples import udp_v4
i0, b0, dst, mac4, seconds = sys.argv[1:6]
cap = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x86dd))
cap.bind((b0, 0x86dd))
cap.settimeout(0.2)
tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
tx.bind((i0, 0))
me = bytes.fromhex(open(f"/sys/class/net/{i0}/address").read().strip().replace(":", ""))
frame = udp_v4(ipaddress.IPv4Address("203.0.113.7").packed, ipaddress.IPv4Address(dst).packed, 5000, 4100,
               b"via netconf", eth_dst=bytes.fromhex(mac4.replace(":", "")), eth_src=me)
deadline = time.time() + float(seconds)
while time.time() < deadline:
    tx.send(frame)
    end = time.time() + 0.2
    while time.time() < end:
        try:
            data = cap.recv(65535)
        except socket.timeout:
            break
        if data[12:14] == b"\x86\xdd" and data[20] == 4 and data.endswith(b"via netconf"):
            print(str(ipaddress.IPv6Address(data[38:54])))
            sys.exit(0)
print("nothing")
'''


def probe(dst: str, seconds: float = 10) -> str:
    return sh(sys.executable, "-c", PROBE, "i0", "b0", dst, MAC4, str(seconds), ns=PEER, timeout=seconds + 30) \
        .stdout.strip()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    import asyncssh
    tmp = tmp_path_factory.mktemp("netconf")
    sh("ip", "netns", "add", LW)
    sh("ip", "netns", "add", PEER)
    procs: list[subprocess.Popen] = []
    try:
        for a, b, mac in (("i1", "i0", PEER4), ("b1", "b0", PEER6)):
            sh("ip", "-n", LW, "link", "add", a, "type", "veth", "peer", "name", b, "netns", PEER)
            sh("ip", "-n", PEER, "link", "set", b, "address", mac)
            sh("ip", "-n", LW, "link", "set", a, "up")
            sh("sysctl", "-qw", f"net.ipv6.conf.{b}.disable_ipv6=1", ns=PEER)
            sh("ip", "-n", PEER, "link", "set", b, "up")
        conf = tmp / "lw.conf"
        conf.write_text(live_config())
        run_dir = tmp / "run"
        env = dict(os.environ, LWAFTR_RUN_DIR=str(run_dir))
        run = subprocess.Popen(["ip", "netns", "exec", LW, sys.executable, "-m", "lwaftr", "run", "--conf", str(conf),
                                "--name", "t", "--v4", "i1", "--v6", "b1"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env)
        procs.append(run)
        deadline = time.time() + 60
        while not (run_dir / "t" / "control.sock").exists():
            assert run.poll() is None, run.communicate()[1]
            assert time.time() < deadline, "lwaftr run did not start"
            time.sleep(0.1)
        key = asyncssh.generate_private_key("ssh-ed25519")
        (tmp / "ops_key").write_bytes(key.export_private_key())
        os.chmod(tmp / "ops_key", 0o600)
        users = tmp / "users"
        users.write_text(f"admin:{hash_password(PASSWORD, ln=12)}\n"
                         f"ops:{key.export_public_key().decode().strip()}\n"
                         f"viewer:{hash_password(PASSWORD, ln=12)}\nviewer:group read-only\n")
        port = _free_port()
        nc = subprocess.Popen([sys.executable, "-m", "lwaftr", "netconf", "--listen", f"127.0.0.1:{port}",
                               "--name", "t", "--host-key", str(tmp / "host_key"), "--users", str(users)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        procs.append(nc)
        deadline = time.time() + 30
        while True:
            assert nc.poll() is None, nc.communicate()[1]
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.time() < deadline, "lwaftr netconf did not start"
                time.sleep(0.1)
        yield {"port": port, "env": env, "sock": run_dir / "t" / "control.sock", "tmp": tmp, "run": run, "nc": nc}
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.communicate(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.communicate()
        sh("ip", "netns", "del", LW, check=False)
        sh("ip", "netns", "del", PEER, check=False)


def connect(lab, username: str = "admin", password: str | None = PASSWORD, **kw):
    from ncclient import manager
    return manager.connect(host="127.0.0.1", port=lab["port"], username=username, password=password,
                           hostkey_verify=False, look_for_keys=False, allow_agent=False, timeout=30, **kw)


def running_text(lab) -> str:
    from lwaftr.io.control import request
    return request(lab["sock"], {"op": "get-config"})["text"]


@live
def test_live_hello_get_config_get_and_a_subscriber_added(lab):
    with connect(lab) as m:
        caps = set(m.server_capabilities)
        assert {BASE_10, BASE_11, "urn:ietf:params:netconf:capability:candidate:1.0",
                "urn:ietf:params:netconf:capability:writable-running:1.0"} <= caps
        assert any(c.startswith(f"{BR_NS}?module=ietf-softwire-br&revision=2019-11-16") for c in caps)
        assert any(c.startswith(f"{EXT_NS}?module=lwaftr-softwire-ext") for c in caps)
        assert m.session_id is not None
        data = m.get_config(source="running").data_ele
        assert text_at(data, "//br:bind-instance/br:name") == ["lwaftr"]
        assert len(data.xpath("//br:binding-entry", namespaces=NS)) == 3
        # nothing for 203.0.113.9 yet: dropped and counted
        assert probe("203.0.113.9", seconds=1) == "nothing"
        # a new subscriber through NETCONF, then its traffic through the running data plane
        m.edit_config(target="running", config=bi("<binding-table>" + entry("2001:db8:9::1", "203.0.113.9", 0, 0)
                                                  + "</binding-table>"))
        assert probe("203.0.113.9") == "2001:db8:9::1"
        assert "b4-ipv6 2001:db8:9::1;" in running_text(lab)
        flt = (f'<br-instances xmlns="{BR_NS}"><binding><bind-instance><binding-table><binding-entry>'
               f'<binding-ipv4-addr>203.0.113.9</binding-ipv4-addr></binding-entry></binding-table>'
               f'</bind-instance></binding></br-instances>')
        data = m.get_config(source="running", filter=("subtree", flt)).data_ele
        assert text_at(data, "//br:binding-entry/br:binding-ipv6info") == ["2001:db8:9::1"]
        # get: the counters of what just went through
        data = m.get(filter=("subtree", f'<br-instances xmlns="{BR_NS}"><binding><bind-instance><traffic-stat/>'
                                        f'<softwire-state xmlns="{STATE_NS}"/></bind-instance></binding>'
                                        f'</br-instances>')).data_ele
        assert int(text_at(data, "//br:traffic-stat/br:sent-ipv6-packets")[0]) >= 1
        assert int(text_at(data, "//br:traffic-stat/br:active-softwire-num")[0]) == 4
        assert int(text_at(data, "//lws:drop-no-dest-softwire-ipv4-packets")[0]) >= 1
        assert int(text_at(data, "//lws:out-ipv6-packets")[0]) >= 1
        assert data.xpath("//br:binding-entry", namespaces=NS) == []


@live
def test_live_policy_edit_invalid_edit_and_restart_refusal(lab):
    from ncclient.operations.rpc import RPCError
    with connect(lab) as m:
        m.edit_config(target="running", config=bi(mtu(1400)))
        data = m.get_config(source="running").data_ele
        assert text_at(data, "//lwx:external-interface/lwx:mtu") == ["1400"]
        assert "mtu 1400;" in running_text(lab).split("internal-interface")[0]
        before = running_text(lab)
        with pytest.raises(RPCError) as e:
            m.edit_config(target="running", config=bi(mtu(1300) + "<binding-table><binding-entry><binding-ipv6info>"
                                                      "2001:db8:1::a</binding-ipv6info><port-set><psid>77</psid>"
                                                      "</port-set></binding-entry></binding-table>"))
        assert e.value.tag == "invalid-value" and "psid 77" in e.value.message
        assert "binding-entry[softwire-br:binding-ipv6info='2001:db8:1::a']/softwire-br:port-set/softwire-br:psid" \
            in e.value.path
        with pytest.raises(RPCError) as e:
            m.edit_config(target="running", config=bi(f'<control-plane xmlns="{EXT_NS}"><mode>kernel</mode>'
                                                      f'</control-plane>'))
        assert e.value.tag == "operation-failed" and "restart" in e.value.message
        assert running_text(lab) == before
        assert text_at(m.get_config(source="running").data_ele, "//lwx:external-interface/lwx:mtu") == ["1400"]
    assert probe("192.0.2.2") == "2001:db8:1::c"            # still forwarding


@live
def test_live_lock_candidate_and_kill_session(lab):
    from ncclient.operations.rpc import RPCError
    a = connect(lab)
    b = connect(lab, "ops", None, key_filename=str(lab["tmp"] / "ops_key"))       # a public key
    try:
        a.lock(target="running")
        with pytest.raises(RPCError) as e:
            b.edit_config(target="running", config=bi(mtu(1350)))
        assert e.value.tag == "lock-denied" and str(a.session_id) in etree.tostring(e.value.xml).decode()
        with pytest.raises(RPCError) as e:
            b.lock(target="running")
        assert e.value.tag == "lock-denied"
        a.unlock(target="running")
        # candidate: invisible in running until committed
        b.edit_config(target="candidate", config=bi(mtu(1360)))
        assert text_at(b.get_config(source="candidate").data_ele, "//lwx:external-interface/lwx:mtu") == ["1360"]
        assert text_at(a.get_config(source="running").data_ele, "//lwx:external-interface/lwx:mtu") != ["1360"]
        b.validate(source="candidate")
        b.commit()
        assert "mtu 1360;" in running_text(lab).split("internal-interface")[0]
        # kill-session ends the other session and releases its lock
        b.lock(target="running")
        a.kill_session(b.session_id)
        deadline = time.time() + 5
        while b.connected and time.time() < deadline:
            time.sleep(0.05)
        assert not b.connected
        a.edit_config(target="running", config=bi(mtu(1460)))
    finally:
        for m in (a, b):
            if m.connected:
                m.close_session()


@live
def test_live_confirmed_commit_get_schema_with_defaults_and_persistence(lab):
    """With ncclient: a confirmed commit not confirmed in time is rolled back, a
    confirmed one stays; get-schema hands out our modules; with-defaults
    report-all; a change made over NETCONF is in the journal on disk."""
    from ncclient.operations.rpc import RPCError
    from lwaftr.config.journal import journal_path, read
    with connect(lab) as m:
        assert "urn:ietf:params:netconf:capability:confirmed-commit:1.1" in m.server_capabilities
        m.edit_config(target="candidate", config=bi(mtu(1410)))
        m.commit(confirmed=True, timeout="1")
        assert "mtu 1410;" in running_text(lab).split("internal-interface")[0]
        deadline = time.time() + 10
        while "mtu 1410;" in running_text(lab).split("internal-interface")[0]:
            assert time.time() < deadline, "the confirmed commit was not rolled back"
            time.sleep(0.1)
        m.edit_config(target="candidate", config=bi(mtu(1420)))
        m.commit(confirmed=True, timeout="30")
        m.commit()                                  # confirmed
        time.sleep(1.5)
        assert "mtu 1420;" in running_text(lab).split("internal-interface")[0]
        with pytest.raises(RPCError) as e:
            m.cancel_commit()
        assert e.value.tag == "operation-failed"
        # get-schema: every module of the hello, as YANG
        for cap in m.server_capabilities:
            if "module=" in cap and "ietf-netconf-monitoring" not in cap:
                name = cap.split("module=")[1].split("&")[0]
                text = m.get_schema(name).data
                assert text.lstrip().startswith(f"module {name}"), name
        with pytest.raises(RPCError) as e:
            m.get_schema("no-such-module")
        assert e.value.tag == "invalid-value"
        data = m.get_config(source="running", with_defaults="report-all").data_ele
        assert text_at(data, "//br:softwire-num-max") == ["4294967295"]
        # durable: the change is the journal's last record, fsynced before the reply
        _, records, _ = read(journal_path(lab["tmp"] / "lw.conf"))
        assert "mtu 1420;" in records[-1]["load"].split("internal-interface")[0]   # (a policy change: whole)
        m.edit_config(target="running", config=bi(mtu(1460)))
        _, after, _ = read(journal_path(lab["tmp"] / "lw.conf"))
        assert len(after) == len(records) + 1


@live
def test_live_read_only_user(lab):
    from ncclient.operations.rpc import RPCError
    before = running_text(lab)
    with connect(lab, "viewer") as m:
        assert text_at(m.get_config(source="running").data_ele, "//br:name") == ["lwaftr"]
        with pytest.raises(RPCError) as e:
            m.edit_config(target="running", config=bi(mtu(1300)))
        assert e.value.tag == "access-denied"
        with pytest.raises(RPCError) as e:
            m.lock(target="running")
        assert e.value.tag == "access-denied"
    assert running_text(lab) == before


@live
def test_live_notifications(lab):
    """ncclient subscribes; an edit made in another session is announced to it."""
    with connect(lab) as sub, connect(lab) as m:
        assert "urn:ietf:params:netconf:capability:notification:1.0" in sub.server_capabilities
        sub.create_subscription()
        m.edit_config(target="running", config=bi(mtu(1440)))
        n = sub.take_notification(block=True, timeout=10)
        assert n is not None, "no notification"
        x = n.notification_ele
        assert x.findtext(f".//{{{NCN}}}netconf-config-change/{{{NCN}}}datastore") == "running"
        assert x.findtext(f".//{{{NCN}}}username") == "admin"
        m.edit_config(target="running", config=bi(mtu(1460)))
        assert sub.take_notification(block=True, timeout=10) is not None


@live
def test_live_authentication(lab):
    from ncclient.transport.errors import AuthenticationError
    for user, pw in (("admin", "wrong"), ("nobody", PASSWORD), ("ops", PASSWORD), ("", "")):
        with pytest.raises(AuthenticationError):
            connect(lab, user, pw)


def _raw(lab, hello_caps: list[str]):
    import paramiko
    t = paramiko.Transport(("127.0.0.1", lab["port"]))
    t.connect(username="admin", password=PASSWORD)
    ch = t.open_session()
    ch.settimeout(10)
    ch.invoke_subsystem("netconf")
    buf = b""
    while b"]]>]]>" not in buf:
        buf += ch.recv(65536)
    caps = "".join(f"<capability>{c}</capability>" for c in hello_caps)
    ch.sendall(f'<hello xmlns="{NC}"><capabilities>{caps}</capabilities></hello>]]>]]>'.encode())
    return t, ch


def _read(ch, end: bytes) -> bytes:
    buf = b""
    while not buf.endswith(end):
        chunk = ch.recv(65536)
        if not chunk:
            break
        buf += chunk
    return buf


@live
def test_live_raw_framing_malformed_and_disconnect(lab):
    before = running_text(lab)
    # base:1.1: malformed XML gets malformed-message and the session goes on; bad framing closes it
    t, ch = _raw(lab, [BASE_11])
    ch.sendall(frame(b"<rpc message-id='1' xmlns='" + NC.encode() + b"'><get-config><source>", True))
    out = _read(ch, b"\n##\n")
    assert b"<error-tag>malformed-message</error-tag>" in out
    ch.sendall(frame(f'<rpc message-id="2" xmlns="{NC}"><get-config><source><running/></source>'
                     f'</get-config></rpc>'.encode(), True))
    out = _read(ch, b"\n##\n")
    assert b'message-id="2"' in out and b"binding-entry" in out
    ch.sendall(b"\n#zz\n<rpc/>")
    out = _read(ch, b"never")
    assert b"malformed-message" in out
    t.close()
    # base:1.0: end-of-message framing
    t, ch = _raw(lab, [BASE_10])
    ch.sendall(f'<rpc message-id="3" xmlns="{NC}"><get-config><source><running/></source>'
               f'</get-config></rpc>]]>]]>'.encode())
    out = _read(ch, b"]]>]]>")
    assert b'message-id="3"' in out and b"<data>" in out
    # a client gone mid-message: nothing of its edit is applied
    half = f'<rpc message-id="4" xmlns="{NC}"><edit-config><target><running/></target>{bi(mtu(1234))}'
    ch.sendall(half.encode())
    t.close()
    time.sleep(0.3)
    assert running_text(lab) == before
    assert lab["nc"].poll() is None and lab["run"].poll() is None


@live
def test_live_log_and_stop(lab):
    """What the server did is logged (who changed what, refused logins); SIGTERM stops it."""
    with connect(lab) as m:
        m.edit_config(target="running", config=bi(mtu(1459)))
    from ncclient.transport.errors import AuthenticationError
    with pytest.raises(AuthenticationError):
        connect(lab, "admin", "nope")
    nc = lab["nc"]
    nc.send_signal(signal.SIGTERM)
    _, err = nc.communicate(timeout=30)
    assert nc.returncode == 0, err
    assert "NETCONF over SSH on 127.0.0.1" in err and "generated host key" in err
    assert "(admin) edit-config on running: whole configuration loaded" in err and "password refused" in err
    assert "Traceback" not in err and "asyncssh" not in err
    assert lab["run"].poll() is None                     # the instance goes on
