# -*- test-case-name: ross.test.integration.test_network -*-
"""
NetworkService: the adapter between ross.v1 and the network manager, and
the conversions of networks and container network settings.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Iterable

from ross.engine.containers.manager import ContainerManager
from ross.engine.network.manager import NetworkManager, network_matcher
from ross.engine.network.store import Endpoint, Network
from ross.errors import FailedPrecondition, InvalidArgument, NotFound
from ross.protocols.bridge import CallInfo
from ross.services.convert import timestamp
from ross.v1 import container_pb2, network_pb2


def network_settings_to_proto(networks: Iterable[tuple[Network, Endpoint | None]]) -> container_pb2.NetworkSettings:
    """
    A container's NetworkSettings: each network by name with the
    container's addresses on it (none while it is not running), and the
    ports of its first network (one published on every address of a
    container with IPv6 twice, for IPv4 and IPv6, as docker lists it).
    """
    settings = container_pb2.NetworkSettings()
    first = True
    for network, endpoint in networks:
        entry = settings.networks[network.name]
        entry.network_id = network.id
        if endpoint is None:
            continue
        entry.ip_address = endpoint.address
        entry.prefix_len = ipaddress.ip_network(network.subnet).prefixlen
        entry.gateway = network.gateway
        entry.mac_address = endpoint.mac
        entry.aliases.extend(endpoint.aliases)
        if endpoint.address6:
            entry.global_ipv6_address = endpoint.address6
            entry.global_ipv6_prefix_len = ipaddress.ip_network(network.subnet6).prefixlen
            entry.ipv6_gateway = network.gateway6
        if first:
            for p in endpoint.ports:
                hosts = [p.host_ip] + (["::"] if not p.host_ip and p.host_port > 0 and endpoint.address6 else [])
                for host in hosts:
                    settings.ports.add(container_port=p.container_port, host_ip=host, host_port=max(0, p.host_port))
            first = False
    return settings


def settings_of(view: Any) -> container_pb2.NetworkSettings:
    return network_settings_to_proto(getattr(view, "networks", ()))


def network_to_proto(network: Network, containers: Iterable[tuple[str, str, Endpoint | None, tuple[str, ...]]],
                     ) -> network_pb2.Network:
    """
    A network with its containers: (ID, name, endpoint while running,
    aliases) each.
    """
    prefix = ipaddress.ip_network(network.subnet).prefixlen
    prefix6 = ipaddress.ip_network(network.subnet6).prefixlen if network.subnet6 else 0
    p = network_pb2.Network(
        id=network.id, name=network.name, driver=network.driver, created=timestamp(network.created_ns),
        scope="local", subnet=network.subnet, gateway=network.gateway, bridge=network.bridge,
        labels=dict(network.labels), builtin=network.builtin, internal=network.internal,
        enable_ipv6=bool(network.subnet6), ipv6_subnet=network.subnet6, ipv6_gateway=network.gateway6)
    for cid, name, endpoint, aliases in containers:
        p.containers.add(container_id=cid, name=name,
                         ip_address=f"{endpoint.address}/{prefix}" if endpoint is not None else "",
                         ipv6_address=f"{endpoint.address6}/{prefix6}" if endpoint is not None and endpoint.address6
                         else "",
                         mac_address=endpoint.mac if endpoint is not None else "", aliases=list(aliases))
    return p


class NetworkAPI:
    """
    Reactor-side implementation of ross.v1.NetworkService.
    """

    def __init__(self, networks: NetworkManager, containers: ContainerManager) -> None:
        self._networks = networks
        self._containers = containers

    def _proto(self, network: Network) -> network_pb2.Network:
        rows = []
        for cid, endpoint, aliases in self._networks.containers_of(network.id):
            record = self._containers.records.get(cid)
            rows.append((cid, record.name if record is not None else "", endpoint, aliases))
        # Containers whose network mode names it, not running.
        for record in self._containers.records.values():
            if record.id in {r[0] for r in rows}:
                continue
            try:
                mode = self._networks.network_for_mode(record.host.network_mode)
            except NotFound:
                continue
            if mode is not None and mode.id == network.id:
                rows.append((record.id, record.name, None, ()))
        return network_to_proto(network, sorted(rows, key=lambda r: r[1]))

    async def CreateNetwork(self, request: Any, call: CallInfo) -> Any:
        network = await self._networks.create_network(request.name, request.driver, request.subnet,
                                                      request.gateway, dict(request.labels), request.internal,
                                                      request.enable_ipv6, request.ipv6_subnet, request.ipv6_gateway)
        return network_pb2.CreateNetworkResponse(network=self._proto(network))

    def _pseudo(self, ref: str) -> network_pb2.Network | None:
        """
        docker's "host" and "none" networks (see
        L{NetworkManager.pseudo_network}), with the containers of that
        network mode.
        """
        pseudo = self._networks.pseudo_network(ref)
        if pseudo is None:
            return None
        p = network_pb2.Network(id=pseudo.id, name=pseudo.name, driver=pseudo.driver, scope="local", builtin=True,
                                created=timestamp(pseudo.created_ns))
        for record in sorted(self._containers.records.values(), key=lambda r: r.name):
            if record.host.network_mode == pseudo.name:
                p.containers.add(container_id=record.id, name=record.name)
        return p

    def _refuse_pseudo(self, ref: str) -> None:
        pseudo = self._pseudo(ref)
        if pseudo is not None:
            raise FailedPrecondition(f"a container cannot be connected to or disconnected from the {pseudo.name} "
                                     "network: it is a network mode (--network), not a network")

    async def RemoveNetwork(self, request: Any, call: CallInfo) -> Any:
        pseudo = self._pseudo(request.network)
        if pseudo is not None:
            raise FailedPrecondition(f"{pseudo.name} is a pre-defined network and cannot be removed")
        await self._networks.remove_network(request.network)
        return network_pb2.RemoveNetworkResponse()

    def ListNetworks(self, request: Any, call: CallInfo) -> Any:
        matchers = [network_matcher(f.key, f.value) for f in request.filters]
        listed = []
        for network in self._networks.all_networks():
            if all(m(network) for m in matchers):
                pseudo = None if network.id in self._networks.networks else self._pseudo(network.id)
                listed.append(pseudo or self._proto(network))
        return network_pb2.ListNetworksResponse(networks=listed)

    def InspectNetwork(self, request: Any, call: CallInfo) -> Any:
        pseudo = self._pseudo(request.network)
        if pseudo is not None:
            return network_pb2.InspectNetworkResponse(network=pseudo)
        return network_pb2.InspectNetworkResponse(network=self._proto(self._networks.lookup(request.network)))

    async def Connect(self, request: Any, call: CallInfo) -> Any:
        self._refuse_pseudo(request.network)
        network = self._networks.lookup(request.network)
        record = self._containers.resolve(request.container)
        pid = record.state.pid if record.state.running else 0
        await self._networks.connect(network.id, record, pid, request.ip_address, tuple(request.aliases),
                                     request.ipv6_address)
        return network_pb2.ConnectResponse()

    async def Disconnect(self, request: Any, call: CallInfo) -> Any:
        self._refuse_pseudo(request.network)
        network = self._networks.lookup(request.network)
        record = self._containers.resolve(request.container)
        await self._networks.disconnect(network.id, record)
        return network_pb2.DisconnectResponse()

    async def PruneNetworks(self, request: Any, call: CallInfo) -> Any:
        labels = []
        for f in request.filters:
            if f.key != "label":
                raise InvalidArgument(f"invalid filter '{f.key}'")
            k, eq, v = f.value.partition("=")
            labels.append((k, eq, v))
        return network_pb2.PruneNetworksResponse(networks_deleted=await self._networks.prune(labels))
