# -*- test-case-name: ross.test.test_network_names -*-
"""
What the embedded DNS answers for container names
(L{ross.engine.network.dns.ContainerNames}): pure logic over the networks
and endpoints.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from ross.engine.network.dns import ContainerNames
from ross.engine.network.store import Endpoint, Network


def network(nid: str, dns: bool = True) -> Network:
    return Network(id=nid, name=nid, bridge=f"br-{nid}", subnet="10.99.0.0/24", gateway="10.99.0.1", created_ns=0,
                   dns=dns)


def endpoint(nid: str, cid: str, address: str, aliases: tuple[str, ...] = (), address6: str = "") -> Endpoint:
    return Endpoint(network_id=nid, container_id=cid, address=address, mac="02:42:0a:63:00:02",
                    host_link=f"vr{cid[:8]}0", aliases=aliases, address6=address6)


WEB = "a" * 64
DB = "b" * 64
OTHER = "c" * 64


class ContainerNamesTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.networks = {n.id: n for n in (network("front"), network("back"), network("plain", dns=False))}
        self.endpoints = {(e.network_id, e.container_id): e for e in (
            endpoint("front", WEB, "10.99.0.2", ("www",), "fd00::2"),
            endpoint("back", WEB, "10.98.0.2"),
            endpoint("back", DB, "10.98.0.3", ("database",)),
            endpoint("plain", OTHER, "10.97.0.2"),
        )}
        self.names = ContainerNames(self.networks, self.endpoints,
                                    lambda cid: {WEB: ("web",), DB: ("db",)}.get(cid, ()))

    def test_names(self) -> None:
        """
        A container's name and short ID resolve to its IPv4 and IPv6
        addresses, on the network asked first; an alias only on the network
        it was given on.
        """
        for name in ("web", WEB[:12]):
            self.assertEqual(self.names.resolve("front", name, "10.99.0.2"), ["10.99.0.2", "fd00::2", "10.98.0.2"])
        self.assertEqual(self.names.resolve("front", "www", "10.99.0.2"), ["10.99.0.2", "fd00::2"])

    def test_other_networks(self) -> None:
        """
        The asking container sees the containers of its other
        name-resolving networks too, the network asked first.
        """
        self.assertEqual(self.names.resolve("front", "database", "10.99.0.2"), ["10.98.0.3"])
        self.assertEqual(self.names.resolve("back", "web", "10.98.0.3"), ["10.98.0.2"])
        self.assertEqual(self.names.resolve("back", "web", "10.98.0.2"), ["10.98.0.2", "10.99.0.2", "fd00::2"])

    def test_strangers(self) -> None:
        """
        A query from an address that is no container of the network gets
        nothing, nor does a name of a network the asker is not on.
        """
        self.assertEqual(self.names.resolve("front", "web", "10.99.0.200"), [])
        self.assertEqual(self.names.resolve("back", "www", "10.98.0.3"), [])
        self.assertEqual(self.names.resolve("front", OTHER[:12], "10.99.0.2"), [])
