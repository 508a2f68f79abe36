# -*- test-case-name: ross.test.test_network_ports -*-
"""
Host port reservations (L{ross.engine.network.ports}), with real sockets on
the loopback address.
"""

from __future__ import annotations

import socket

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from ross.engine.network.ports import PortReservations, port_mappings
from ross.engine.network.store import Endpoint, Network, PortMapping
from ross.engine.reactors import engine_reactor
from ross.errors import FailedPrecondition, InvalidArgument

NETWORK = Network(id="n1", name="app", bridge="br-n1", subnet="10.99.0.0/24", gateway="10.99.0.1", created_ns=0)


def endpoint(cid: str, *ports: PortMapping) -> Endpoint:
    return Endpoint(network_id=NETWORK.id, container_id=cid, address="10.99.0.2", mac="02:42:0a:63:00:02",
                    host_link=f"vr{cid}0", ports=ports)


def taken(port: int, kind: int = socket.SOCK_STREAM) -> bool:
    """
    Whether another socket cannot bind 127.0.0.1 C{port}.
    """
    s = socket.socket(socket.AF_INET, kind)
    try:
        s.bind(("127.0.0.1", port))
        return False
    except OSError:
        return True
    finally:
        s.close()


class PortReservationTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.ports = PortReservations(engine_reactor(MemoryReactorClock()), {NETWORK.id: NETWORK})
        self.addCleanup(self.ports.unreserve_all)

    def hold(self) -> int:
        """
        A port of 127.0.0.1 held by a socket of the test's own.
        """
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.addCleanup(s.close)
        return int(s.getsockname()[1])

    def test_ephemeral(self) -> None:
        """
        A published port without a number gets one, held until the
        container's ports are let go; an exposed port is left as it is.
        """
        mappings = port_mappings([("80/tcp", "127.0.0.1", "")], False, ["443/tcp"])
        [reserved] = self.ports.reserve_all("c1", [endpoint("c1", *mappings)])
        published, exposed = reserved.ports
        self.assertGreater(published.host_port, 0)
        self.assertTrue(taken(published.host_port))
        self.assertEqual(exposed, PortMapping(443, "tcp"))
        self.ports.unreserve("c1")
        self.assertFalse(taken(published.host_port))

    def test_conflict(self) -> None:
        """
        A port another socket holds is refused, naming the address and port.
        """
        port = self.hold()
        mappings = port_mappings([("80/tcp", "127.0.0.1", str(port))], False, ())
        error = self.assertRaises(FailedPrecondition, self.ports.reserve_all, "c1", [endpoint("c1", *mappings)])
        self.assertEqual(str(error), f"Bind for 127.0.0.1:{port} failed: port is already allocated")

    def test_conflict_between_containers(self) -> None:
        """
        A port one container holds is refused to another until the first
        lets it go.
        """
        [first] = self.ports.reserve_all("c1", [endpoint("c1", *port_mappings([("80", "127.0.0.1", "")], False, ()))])
        port = first.ports[0].host_port
        wanted = port_mappings([("80/tcp", "127.0.0.1", str(port))], False, ())
        self.assertRaises(FailedPrecondition, self.ports.reserve_all, "c2", [endpoint("c2", *wanted)])
        self.ports.unreserve("c1")
        [second] = self.ports.reserve_all("c2", [endpoint("c2", *wanted)])
        self.assertEqual(second.ports[0].host_port, port)

    def test_range(self) -> None:
        """
        A range gets its first free port.
        """
        port = self.hold()
        if taken(port + 1):
            self.skipTest(f"127.0.0.1:{port + 1} is in use")
        wanted = port_mappings([("80/tcp", "127.0.0.1", f"{port}-{port + 1}")], False, ())
        [reserved] = self.ports.reserve_all("c1", [endpoint("c1", *wanted)])
        self.assertEqual(reserved.ports[0], PortMapping(80, "tcp", "127.0.0.1", port + 1))

    def test_close(self) -> None:
        """
        Closing one mapping lets go of its port and keeps the container's
        others; a UDP port is told from a TCP one of the same number.
        """
        mappings = port_mappings([("80/tcp", "127.0.0.1", ""), ("53/udp", "127.0.0.1", "")], False, ())
        [reserved] = self.ports.reserve_all("c1", [endpoint("c1", *mappings)])
        tcp, udp = reserved.ports
        self.ports.close("c1", PortMapping(53, "udp", "127.0.0.1", tcp.host_port))
        self.assertTrue(taken(tcp.host_port))
        self.ports.close("c1", tcp)
        self.assertFalse(taken(tcp.host_port))
        self.assertTrue(taken(udp.host_port, socket.SOCK_DGRAM))

    def test_ipv6_without(self) -> None:
        """
        An IPv6 host address for a container without IPv6 is refused.
        """
        wanted = port_mappings([("80/tcp", "::1", "")], False, ())
        self.assertRaises(InvalidArgument, self.ports.reserve_all, "c1", [endpoint("c1", *wanted)])
