"""BGP by BIRD (lwaftr.routing.bird) without a network: what is announced, the
sessions, BIRD's configuration (checked by ``bird -p`` when BIRD is
installed), the ``lwaftr { bgp { ... } }`` leaves and BIRD's control protocol.
The sessions themselves run in tests/test_ecmp.py."""
from __future__ import annotations

import ipaddress
import re
import shutil
import socket
import threading
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from lwaftr.bindingtable.table import BindingTable
from lwaftr.config.errors import ConfigError
from lwaftr.config.model import Bgp, BgpPeer, ControlPlane, Instance, InterfaceAddresses, NextHop
from lwaftr.config.snabb import dump_snabb, loads_snabb
from lwaftr.examples import example_config
from lwaftr.routing import bird as B

BIRD = shutil.which("bird") or ("/usr/sbin/bird" if shutil.os.path.exists("/usr/sbin/bird") else None)
v4, v6 = (lambda a: ipaddress.IPv4Address(a).packed), (lambda a: ipaddress.IPv6Address(a).packed)


def two_instances(**bgp) -> "B.Config":
    insts = [Instance(device="b1", external_device="i1", queue_id=0,
                      external=InterfaceAddresses(v4("198.51.100.1"), bytes(6), NextHop(ip=v4("198.51.100.2"))),
                      internal=InterfaceAddresses(v6("2001:db8:0:1::1"), bytes(6), NextHop(ip=v6("2001:db8:0:1::2")))),
             Instance(device="s1", external_device=None, queue_id=0,
                      external=InterfaceAddresses(v4("198.51.100.65"), bytes(6), NextHop(ip=v4("198.51.100.66"))),
                      internal=InterfaceAddresses(v6("2001:db8:0:2::1"), bytes(6), NextHop(mac=bytes(6))))]
    return replace(example_config(), instances=insts, control_plane=ControlPlane(external_prefix_length=26),
                   bgp=Bgp(enable=True, local_as=65001, peer_as=65010, **bgp))


SPECS = [["--v4", "i1", "--v6", "b1"], ["--on-a-stick", "s1"]]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 2**32 - 1) | st.integers(int(ipaddress.IPv4Address("192.0.2.0")),
                                                        int(ipaddress.IPv4Address("192.0.2.255"))), max_size=300))
def test_aggregate_is_collapse_addresses(addrs):
    want = list(ipaddress.collapse_addresses(ipaddress.IPv4Network(a) for a in addrs))
    assert B.aggregate_ipv4(np.array(addrs, np.uint32)) == want


def test_announced_from_the_table_or_configured():
    cfg = example_config()                      # 192.0.2.1 (two port sets) and 192.0.2.2, BR 2001:db8:ffff::1
    table = BindingTable.build(cfg.bindings)
    assert sorted(B.table_ipv4(table).tolist()) == [int(ipaddress.IPv4Address(a)) for a in ("192.0.2.1", "192.0.2.2")]
    assert B.announced(cfg, table) == ([ipaddress.IPv4Network("192.0.2.1/32"), ipaddress.IPv4Network("192.0.2.2/32")],
                                       [ipaddress.IPv6Network("2001:db8:ffff::1/128")])
    cfg = replace(cfg, bgp=Bgp(ipv4_prefixes=((v4("192.0.2.0"), 24),), ipv6_prefixes=((v6("2001:db8:ffff::"), 48),)))
    assert B.announced(cfg, table) == ([ipaddress.IPv4Network("192.0.2.0/24")],
                                       [ipaddress.IPv6Network("2001:db8:ffff::/48")])


def test_sessions_per_worker_interface():
    cfg = two_instances(peers=(BgpPeer("b1", ipv6_peer_as=65020),
                               BgpPeer("s1", ipv4_address=v4("192.0.2.254"), ipv4_peer_as=65011)))
    sessions, notes = B.plan(cfg, SPECS)
    got = {s.name: (s.tap, s.local, s.peer, s.peer_as, s.direct) for s in sessions}
    assert got == {"w0_v4": ("cp-i1", "198.51.100.1", "198.51.100.2", 65010, True),
                   "w0_v6": ("cp-b1", "2001:db8:0:1::1", "2001:db8:0:1::2", 65020, False),   # TAP has a /128
                   "w1_v4": ("cp4-s1", "198.51.100.65", "192.0.2.254", 65011, False)}
    assert len(notes) == 1 and "worker 1 IPv6 (cp6-s1)" in notes[0]   # next hop by MAC, no address given


def test_one_session_per_device_when_its_queues_have_a_worker_each():
    """Queue workers of one device share its TAPs: the sessions are the device's, made once."""
    cfg = two_instances()
    first = cfg.instances[0]
    cfg = replace(cfg, instances=[first, replace(first, queue_id=1), cfg.instances[1]])
    sessions, _ = B.plan(cfg, [SPECS[0], SPECS[0], SPECS[1]])
    assert sorted(s.name for s in sessions) == ["w0_v4", "w0_v6", "w2_v4"]


def test_bird_configuration():
    cfg = two_instances(bfd=True)
    table = BindingTable.build(cfg.bindings)
    sessions, _ = B.plan(cfg, SPECS)
    text = B.render(cfg, sessions, *B.announced(cfg, table), "t")
    assert 'route 192.0.2.1/32 via "cp-i1";' in text and 'route 192.0.2.2/32 via "cp4-s1";' in text
    assert 'route 2001:db8:ffff::1/128 via "cp-b1";' in text
    assert 'interface "cp-i1"; direct;' in text and "multihop 1;" in text
    assert text.count("next hop self;") == 3 and text.count("bfd on;") == 3
    assert "graceful restart off;" in text and "min rx interval 100 ms;" in text
    assert "router id 198.51.100.1;" in text
    if BIRD is None:
        pytest.skip("BIRD 2 is not installed: the text is not checked by bird -p")
    bird = B.Bird("x.conf", cfg, table, SPECS, "t", "/nonexistent", BIRD)
    bird.check()
    with pytest.raises(B.RoutingError, match="BIRD refuses"):
        bird.check(text.replace("next hop self;", "next hop selfish;"))


def test_for_run():
    cfg = two_instances()
    table = BindingTable.build(cfg.bindings)
    assert B.Bird.for_run("x.conf", replace(cfg, bgp=Bgp()), table, SPECS, "t") is None
    with pytest.raises(B.RoutingError, match="kernel control plane"):
        B.Bird.for_run("x.conf", cfg, table, SPECS, "t", mode="built-in")


def test_bgp_leaves_round_trip_and_errors():
    cfg = replace(two_instances(bfd=True, bfd_interval=0.05, ipv4_prefixes=((v4("192.0.2.0"), 24),),
                                peers=(BgpPeer("s1", ipv4_address=v4("192.0.2.254"), ipv6_peer_as=65020),)))
    text = dump_snabb(cfg)
    assert 'ipv4-prefix "192.0.2.0/24";' in text and "ipv6-peer-as 65020;" in text
    assert loads_snabb(text).bgp == cfg.bgp
    assert "bgp" not in dump_snabb(example_config())                   # off: nothing written
    head = text[:text.index("lwaftr {")]
    for ext, msg in (("bgp { enable true; peer-as 1; }", "'local-as' is required"),
                     ("bgp { enable true; local-as 1; }", "no peer AS for device(s) b1, s1"),
                     ("bgp { ipv4-prefix '192.0.2.1/24'; }", "has host bits set"),
                     ("bgp { ipv6-prefix '192.0.2.0/24'; }", "bad IPv6 prefix"),
                     ("bgp { peer { device x; } }", "no instance has that device"),
                     ("bgp { peer { device s1; } peer { device s1; } }", "duplicate bgp peer"),
                     ("bgp { hold-time 2; }", "out of range"),
                     ("bgp { hold-time 3; keepalive-time 3; }", "must be shorter than hold-time")):
        with pytest.raises(ConfigError, match=re.escape(msg)):
            loads_snabb(head + "lwaftr { " + ext + " }\n")


def test_bgp_leaves_in_rfc8676_configurations():
    """The same leaves in lwaftr-softwire-ext (XML and JSON), the same rules."""
    from lwaftr.config import ietf
    cfg = two_instances(bfd=True, bfd_interval=0.05, ipv6_prefixes=((v6("2001:db8:ffff::"), 48),),
                        peers=(BgpPeer("s1", ipv4_address=v4("192.0.2.254"), ipv6_peer_as=65020),))
    for fmt in (ietf.XML, ietf.JSON):
        assert ietf.loads_ietf(ietf.dumps_ietf(cfg, fmt)).bgp == cfg.bgp
    text = ietf.dumps_ietf(cfg, ietf.JSON)
    with pytest.raises(ConfigError, match="'local-as' is required"):
        ietf.loads_ietf(text.replace('"local-as": 65001,', ""))
    with pytest.raises(ConfigError, match="no instance has that device"):
        ietf.loads_ietf(ietf.dumps_ietf(replace(cfg, bgp=replace(cfg.bgp, peers=(BgpPeer("x"),)))))
    assert "bgp" not in ietf.dumps_ietf(example_config())


def test_control_protocol(tmp_path):
    """request() and protocols() against a stand-in for BIRD's control socket."""
    path = tmp_path / "bird.ctl"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen()
    replies = {b"show protocols\n": (b"2002-Name       Proto      Table      State  Since         Info\n"
                                     b"1002-w0_v4      BGP        ---        up     2026-11-29 07:07:55  Established   \n"
                                     b" w1_v4      BGP        ---        start  2026-11-29 07:07:53  Active        "
                                     b"Socket: Connection refused\n"
                                     b"0000 \n"),
               b'configure "x"\n': b"0002-Reading configuration from x\n8002 x, line 3: syntax error\n"}

    def serve():
        for _ in replies:
            c, _ = srv.accept()
            with c:
                c.sendall(b"0001 BIRD 2.0.12 ready.\n")
                cmd = b""
                while not cmd.endswith(b"\n"):
                    cmd += c.recv(100)
                reply = replies[cmd]
                c.sendall(reply[:30])          # in pieces
                c.sendall(reply[30:])

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    assert B.protocols(path) == {"w0_v4": ("up", "Established"),
                                 "w1_v4": ("start", "Active Socket: Connection refused")}
    assert B.request(path, 'configure "x"') == [(2, "Reading configuration from x"),
                                                (8002, "x, line 3: syntax error")]
    t.join(5)
    srv.close()


def test_ospf_routers_configuration_and_leaves():
    """OSPF (alone, without BGP): a v2 and a v3 router per worker on its TAPs, checked by
    bird -p; the lwaftr { ospf { ... } } leaves in both formats, and their rules."""
    from lwaftr.config import ietf
    from lwaftr.config.model import Ospf
    cfg = replace(two_instances(), bgp=Bgp(), ospf=Ospf(enable=True, area=7, hello_interval=2, dead_interval=9,
                                                        cost=30))
    table = BindingTable.build(cfg.bindings)
    routers = B.ospf_plan(cfg, SPECS)
    assert [(r.name, r.family, r.tap, r.router_id) for r in routers] == [
        ("w0_ospf4", 4, "cp-i1", "198.51.100.1"), ("w0_ospf6", 6, "cp-b1", "198.51.100.1"),
        ("w1_ospf4", 4, "cp4-s1", "198.51.100.65"), ("w1_ospf6", 6, "cp6-s1", "198.51.100.65")]
    text = B.render(cfg, [], *B.announced(cfg, table), "t", routers)
    assert text.count("protocol ospf v2 ") == 2 and text.count("protocol ospf v3 ") == 2
    assert 'interface "cp6-s1" { type ptp; hello 2; dead 9; cost 30; };' in text and "area 7 {" in text
    assert 'route 192.0.2.2/32 via "cp4-s1";' in text and 'route 2001:db8:ffff::1/128 via "cp-b1";' in text
    assert "protocol bgp" not in text and "protocol bfd" not in text
    assert B.ospf_plan(replace(cfg, ospf=Ospf()), SPECS) == []
    with pytest.raises(B.RoutingError, match="ospf needs the kernel control plane"):
        B.Bird.for_run("x.conf", cfg, table, SPECS, "t", mode="built-in")
    if BIRD is None:
        pytest.skip("BIRD 2 is not installed: the text is not checked by bird -p")
    bird = B.Bird.for_run("x.conf", cfg, table, SPECS, "t")        # OSPF alone runs BIRD
    assert bird is not None and bird.routers == routers
    bird.check()
    assert loads_snabb(dump_snabb(cfg)).ospf == cfg.ospf
    for fmt in (ietf.XML, ietf.JSON):
        assert ietf.loads_ietf(ietf.dumps_ietf(cfg, fmt)).ospf == cfg.ospf
    text = dump_snabb(cfg)
    with pytest.raises(ConfigError, match="dead-interval 2 must be longer than hello-interval 2"):
        loads_snabb(text.replace("dead-interval 9", "dead-interval 2"))
    with pytest.raises(ConfigError, match="out of range"):
        loads_snabb(text.replace("cost 30", "cost 0"))
