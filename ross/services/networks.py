# -*- test-case-name: ross.test.integration.test_network -*-
"""
NetworkService: the adapter between ross.v1 and the network manager, and
the conversions of networks and container network settings.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Iterable

from ross.engine.containers.manager import ContainerManager
from ross.engine.network.manager import NetworkManager
from ross.engine.network.store import Endpoint, Network
from ross.errors import InvalidArgument, NotFound
from ross.protocols.bridge import CallInfo
from ross.services.convert import timestamp
from ross.v1 import container_pb2, network_pb2


def network_settings_to_proto(networks: Iterable[tuple[Network, Endpoint | None]]) -> container_pb2.NetworkSettings:
    """
    A container's NetworkSettings: each network by name with the
    container's address on it (none while it is not running), and the
    ports of its first network.
    """
    settings = container_pb2.NetworkSettings()
    first = True
    for network, endpoint in networks:
        entry = settings.networks[network.name]
        entry.network_id = network.id
        if endpoint is None:
            continue
        entry.ip_address = endpoint.address
        entry.prefix_len = ipaddress.IPv4Network(network.subnet).prefixlen
        entry.gateway = network.gateway
        entry.mac_address = endpoint.mac
        entry.aliases.extend(endpoint.aliases)
        if first:
            for p in endpoint.ports:
                settings.ports.add(container_port=p.container_port, host_ip=p.host_ip,
                                   host_port=max(0, p.host_port))
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
    prefix = ipaddress.IPv4Network(network.subnet).prefixlen
    p = network_pb2.Network(
        id=network.id, name=network.name, driver=network.driver, created=timestamp(network.created_ns),
        scope="local", subnet=network.subnet, gateway=network.gateway, bridge=network.bridge,
        labels=dict(network.labels), builtin=network.builtin)
    for cid, name, endpoint, aliases in containers:
        p.containers.add(container_id=cid, name=name,
                         ip_address=f"{endpoint.address}/{prefix}" if endpoint is not None else "",
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
                                                      request.gateway, dict(request.labels))
        return network_pb2.CreateNetworkResponse(network=self._proto(network))

    async def RemoveNetwork(self, request: Any, call: CallInfo) -> Any:
        await self._networks.remove_network(request.network)
        return network_pb2.RemoveNetworkResponse()

    def ListNetworks(self, request: Any, call: CallInfo) -> Any:
        networks = sorted(self._networks.networks.values(), key=lambda n: n.name)
        for f in request.filters:
            if f.key == "name":
                networks = [n for n in networks if f.value in n.name]
            elif f.key == "id":
                networks = [n for n in networks if n.id.startswith(f.value)]
            elif f.key == "driver":
                networks = [n for n in networks if n.driver == f.value]
            elif f.key == "label":
                k, eq, v = f.value.partition("=")
                networks = [n for n in networks if k in n.labels and (not eq or n.labels[k] == v)]
            elif f.key == "type":
                if f.value not in ("builtin", "custom"):
                    raise InvalidArgument(f"invalid filter 'type={f.value}': use builtin or custom")
                networks = [n for n in networks if n.builtin == (f.value == "builtin")]
            else:
                raise InvalidArgument(f"invalid filter '{f.key}'")
        return network_pb2.ListNetworksResponse(networks=[self._proto(n) for n in networks])

    def InspectNetwork(self, request: Any, call: CallInfo) -> Any:
        return network_pb2.InspectNetworkResponse(network=self._proto(self._networks.lookup(request.network)))

    async def Connect(self, request: Any, call: CallInfo) -> Any:
        network = self._networks.lookup(request.network)
        record = self._containers.resolve(request.container)
        pid = record.state.pid if record.state.running else 0
        await self._networks.connect(network.id, record, pid, request.ip_address, tuple(request.aliases))
        return network_pb2.ConnectResponse()

    async def Disconnect(self, request: Any, call: CallInfo) -> Any:
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
        removed = []
        for network in sorted(self._networks.networks.values(), key=lambda n: n.name):
            if network.builtin or any(k not in network.labels or (eq and network.labels[k] != v)
                                      for k, eq, v in labels):
                continue
            # As docker: unused means no container is on it now.
            if any(endpoint is not None for _, endpoint, _ in self._networks.containers_of(network.id)):
                continue
            await self._networks.remove_network(network.id)
            removed.append(network.name)
        return network_pb2.PruneNetworksResponse(networks_deleted=removed)
