# -*- test-case-name: ross.test.integration.test_dockerapi_resources -*-
"""
docker's network and volume routes over the network manager and the
volume store.
"""

from __future__ import annotations

from typing import Any

from ross.dockerapi.router import Call, Reply, Route, route
from ross.dockerapi.schema import network_json, volume_json
from ross.engine.engine import Engine
from ross.engine.network.manager import network_matcher
from ross.engine.network.store import Endpoint, Network
from ross.errors import FailedPrecondition, InvalidArgument


def _body(call: Call) -> dict[str, Any]:
    body = call.json() or {}
    if not isinstance(body, dict):
        raise InvalidArgument("invalid request body: expected a JSON object")
    return body


def _label_filters(call: Call) -> list[tuple[str, str, str]]:
    labels = []
    for key, values in call.filters().items():
        if key != "label":
            raise InvalidArgument(f"invalid filter '{key}'")
        for value in values:
            k, eq, v = value.partition("=")
            labels.append((k, eq, v))
    return labels


class NetworkRoutes:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._networks = engine.network
        self._containers = engine.containers

    def routes(self) -> list[Route]:
        return [
            route("GET", "/networks", self.listing),
            route("POST", "/networks/create", self.create),
            route("POST", "/networks/prune", self.prune),
            route("GET", "/networks/{id}", self.inspect),
            route("DELETE", "/networks/{id}", self.remove),
            route("POST", "/networks/{id}/connect", self.connect),
            route("POST", "/networks/{id}/disconnect", self.disconnect),
        ]

    def _json(self, network: Network) -> dict[str, Any]:
        rows: list[tuple[str, str, Endpoint | None]] = []
        if network.id in self._networks.networks:
            for cid, endpoint, _ in self._networks.containers_of(network.id):
                record = self._containers.records.get(cid)
                rows.append((cid, record.name if record is not None else "", endpoint))
        return network_json(network, rows)

    def _lookup(self, ref: str) -> Network:
        return self._networks.pseudo_network(ref) or self._networks.lookup(ref)

    async def listing(self, call: Call) -> Any:
        matchers = [network_matcher(key, value) for key, values in call.filters().items() for value in values]
        return [self._json(n) for n in self._networks.all_networks() if all(m(n) for m in matchers)]

    async def inspect(self, call: Call) -> Any:
        return self._json(self._lookup(call["id"]))

    async def create(self, call: Call) -> Reply:
        body = _body(call)
        name = body.get("Name")
        if not isinstance(name, str) or not name:
            raise InvalidArgument("network name is required")
        ipam = body.get("IPAM") or {}
        configs = ipam.get("Config") or [] if isinstance(ipam, dict) else []
        if not isinstance(configs, list) or not all(isinstance(c, dict) for c in configs):
            raise InvalidArgument("invalid IPAM config: expected a list of objects")
        v4 = [c for c in configs if ":" not in str(c.get("Subnet") or "")]
        v6 = [c for c in configs if ":" in str(c.get("Subnet") or "")]
        if len(v4) > 1 or len(v6) > 1:
            raise InvalidArgument("Ross networks take one IPv4 and one IPv6 subnet at most")
        labels = body.get("Labels") or {}
        if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
            raise InvalidArgument("invalid Labels: expected an object of strings")
        network = await self._networks.create_network(
            name, str(body.get("Driver") or ""), str(v4[0].get("Subnet") or "") if v4 else "",
            str(v4[0].get("Gateway") or "") if v4 else "", labels, bool(body.get("Internal")),
            bool(body.get("EnableIPv6")) or bool(v6), str(v6[0].get("Subnet") or "") if v6 else "",
            str(v6[0].get("Gateway") or "") if v6 else "")
        return Reply(201, {"Id": network.id, "Warning": ""})

    async def remove(self, call: Call) -> None:
        pseudo = self._networks.pseudo_network(call["id"])
        if pseudo is not None:
            raise FailedPrecondition(f"{pseudo.name} is a pre-defined network and cannot be removed")
        await self._networks.remove_network(call["id"])

    def _refuse_pseudo(self, ref: str) -> None:
        pseudo = self._networks.pseudo_network(ref)
        if pseudo is not None:
            raise FailedPrecondition(f"container cannot be disconnected from or connected to the {pseudo.name} "
                                     "network: it is a network mode, not a network")

    async def connect(self, call: Call) -> Reply:
        self._refuse_pseudo(call["id"])
        body = _body(call)
        network = self._networks.lookup(call["id"])
        record = self._containers.resolve(str(body.get("Container") or ""))
        endpoint = body.get("EndpointConfig") or {}
        if not isinstance(endpoint, dict):
            raise InvalidArgument("invalid EndpointConfig: expected an object")
        ipam = endpoint.get("IPAMConfig") or {}
        aliases = endpoint.get("Aliases") or []
        if not isinstance(ipam, dict) or not isinstance(aliases, list):
            raise InvalidArgument("invalid EndpointConfig")
        pid = record.state.pid if record.state.running else 0
        await self._networks.connect(network.id, record, pid, str(ipam.get("IPv4Address") or ""),
                                     tuple(str(a) for a in aliases), str(ipam.get("IPv6Address") or ""))
        return Reply(200)

    async def disconnect(self, call: Call) -> Reply:
        self._refuse_pseudo(call["id"])
        body = _body(call)
        network = self._networks.lookup(call["id"])
        record = self._containers.resolve(str(body.get("Container") or ""))
        await self._networks.disconnect(network.id, record)
        return Reply(200)

    async def prune(self, call: Call) -> Any:
        removed = await self._networks.prune(_label_filters(call))
        return {"NetworksDeleted": removed or None}


class VolumeRoutes:
    def __init__(self, engine: Engine) -> None:
        self._volumes = engine.volumes

    def routes(self) -> list[Route]:
        return [
            route("GET", "/volumes", self.listing),
            route("POST", "/volumes/create", self.create),
            route("POST", "/volumes/prune", self.prune),
            route("GET", "/volumes/{name}", self.inspect),
            route("DELETE", "/volumes/{name}", self.remove),
        ]

    def _json(self, name: str) -> dict[str, Any]:
        return volume_json(self._volumes.get(name), len(self._volumes.users_of(name)))

    async def listing(self, call: Call) -> Any:
        filters = [(key, value) for key, values in call.filters().items() for value in values]
        return {"Volumes": [self._json(v.name) for v in self._volumes.list(filters)], "Warnings": None}

    async def create(self, call: Call) -> Reply:
        body = _body(call)
        labels = body.get("Labels") or {}
        if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
            raise InvalidArgument("invalid Labels: expected an object of strings")
        options = body.get("DriverOpts") or {}
        if not isinstance(options, dict) or not all(isinstance(v, str) for v in options.values()):
            raise InvalidArgument("invalid DriverOpts: expected an object of strings")
        volume = await self._volumes.create(str(body.get("Name") or ""), labels, str(body.get("Driver") or ""),
                                            options=options)
        return Reply(201, self._json(volume.name))

    async def inspect(self, call: Call) -> Any:
        return self._json(call["name"])

    async def remove(self, call: Call) -> None:
        await self._volumes.remove(call["name"], call.flag("force"))

    async def prune(self, call: Call) -> Any:
        every, labels = False, []
        for key, values in call.filters().items():
            for value in values:
                if key == "all":
                    every = value.lower() in ("true", "1")
                elif key == "label":
                    k, _, v = value.partition("=")
                    labels.append((k, v))
                else:
                    raise InvalidArgument(f"invalid filter '{key}'")
        removed, freed = await self._volumes.prune(every, labels)
        return {"VolumesDeleted": removed or None, "SpaceReclaimed": freed}
