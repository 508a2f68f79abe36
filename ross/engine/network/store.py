# -*- test-case-name: ross.test.integration.test_network -*-
"""
Networks and endpoints (a container's address on a network) and their
persistence in C{<root>/networks.db}: records live in memory, the
manager's view, and are written through to SQLite on one writer thread,
one transaction per change. The schema holds the last word on IPAM: an
address, IPv4 or IPv6, is unique per network.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from ross.engine.containers.config import structure, unstructure
from ross.engine.database import ThreadConnections, transaction
from ross.errors import AlreadyExists

_T = TypeVar("_T")


@attrs.frozen
class Network:
    """
    A bridge network. C{builtin} marks the default one ("bridge"), which
    cannot be removed; C{dns}: containers resolve each other's names
    (user-defined networks); C{internal}: no traffic beyond the network but
    to the host (--internal). C{subnet6} and C{gateway6}: its IPv6 subnet
    and the bridge's address there (empty: IPv4 only).
    """

    id: str
    name: str
    bridge: str
    subnet: str
    gateway: str
    created_ns: int
    driver: str = "bridge"
    labels: Mapping[str, str] = attrs.field(factory=dict)
    builtin: bool = False
    dns: bool = False
    internal: bool = False
    subnet6: str = ""
    gateway6: str = ""


@attrs.frozen
class PortMapping:
    """
    A container port and where the host publishes it: on C{host_ip} (empty:
    every address) port C{host_port}; 0 means exposed, not published, and
    -1 asks for an ephemeral port (replaced by the one reserved). With
    C{host_port_end}, the first free port from C{host_port} to it is taken
    (and the range forgotten).
    """

    port: int
    proto: str
    host_ip: str = ""
    host_port: int = 0
    host_port_end: int = 0

    @property
    def container_port(self) -> str:
        return f"{self.port}/{self.proto}"


@attrs.frozen
class Endpoint:
    """
    A container's interface on a network: the addresses it holds while it
    runs (C{address6} on a network with IPv6), the veth end on the host
    (C{host_link}) and its name inside.
    """

    network_id: str
    container_id: str
    address: str
    mac: str
    host_link: str
    ifname: str = "eth0"
    aliases: tuple[str, ...] = ()
    ports: tuple[PortMapping, ...] = ()
    address6: str = ""


class EndpointTable(dict[tuple[str, str], Endpoint]):
    """
    The endpoints by (network ID, container ID), also indexed by container:
    a listing asks for each container's endpoints, which a walk of them all
    made quadratic in the number of containers.
    """

    def __init__(self) -> None:
        super().__init__()
        self._by_container: dict[str, dict[str, Endpoint]] = {}

    def of(self, container_id: str) -> list[Endpoint]:
        """
        The container's endpoints.
        """
        return list(self._by_container.get(container_id, {}).values())

    def __setitem__(self, key: tuple[str, str], endpoint: Endpoint) -> None:
        super().__setitem__(key, endpoint)
        self._by_container.setdefault(key[1], {})[key[0]] = endpoint

    def __delitem__(self, key: tuple[str, str]) -> None:
        super().__delitem__(key)
        self._unindex(key)

    def pop(self, key: tuple[str, str], *default: Any) -> Any:
        if key in self:
            self._unindex(key)
        return super().pop(key, *default)

    def clear(self) -> None:
        super().clear()
        self._by_container.clear()

    def _unindex(self, key: tuple[str, str]) -> None:
        own = self._by_container.get(key[1])
        if own is not None:
            own.pop(key[0], None)
            if not own:
                del self._by_container[key[1]]

    def _refused(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("endpoints are set and removed one by one")

    update = setdefault = popitem = __ior__ = _refused


@attrs.frozen
class Member:
    """
    A container connected to a network beyond the one of its network mode
    (`ross network connect`): it gets an endpoint there at every start.
    """

    network_id: str
    container_id: str
    address: str = ""
    aliases: tuple[str, ...] = ()
    address6: str = ""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS networks (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS endpoints (
    network_id TEXT NOT NULL,
    container_id TEXT NOT NULL,
    address TEXT NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (network_id, container_id),
    UNIQUE (network_id, address)
);
CREATE TABLE IF NOT EXISTS addresses6 (
    network_id TEXT NOT NULL,
    container_id TEXT NOT NULL,
    address TEXT NOT NULL,
    PRIMARY KEY (network_id, container_id),
    UNIQUE (network_id, address)
);
CREATE TABLE IF NOT EXISTS members (
    network_id TEXT NOT NULL,
    container_id TEXT NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (network_id, container_id)
);
"""


class NetworkStore:
    """
    SQLite persistence of networks and endpoints at C{path}.
    """

    def __init__(self, reactor: IReactorThreads, path: Path) -> None:
        self._reactor = reactor
        self._pool = ThreadPool(minthreads=1, maxthreads=1, name="ross-networks-db")
        self._db = ThreadConnections(path, _SCHEMA)

    def start(self) -> Deferred[tuple[list[Network], list[Endpoint], list[Member]]]:
        """
        Open the database; fires with every stored network, endpoint and
        member.
        """
        self._pool.start()
        return self._run(self._load)

    def stop(self) -> Deferred[None]:
        return deferToThreadPool(self._reactor, self._reactor.getThreadPool(), self._pool.stop)

    def _run(self, fn: Callable[..., _T], *args: object) -> Deferred[_T]:
        return deferToThreadPool(self._reactor, self._pool, fn, *args)

    def _load(self) -> tuple[list[Network], list[Endpoint], list[Member]]:
        db = self._db()
        networks = [structure(Network, json.loads(r[0])) for r in db.execute("SELECT record FROM networks")]
        endpoints = [structure(Endpoint, json.loads(r[0])) for r in db.execute("SELECT record FROM endpoints")]
        members = [structure(Member, json.loads(r[0])) for r in db.execute("SELECT record FROM members")]
        return networks, endpoints, members

    def _write(self, statements: list[tuple[str, tuple[Any, ...]]]) -> None:
        try:
            with transaction(self._db()) as db:
                for sql, args in statements:
                    db.execute(sql, args)
        except sqlite3.IntegrityError as e:
            raise AlreadyExists(f"network state conflict: {e}") from None

    def put_network(self, network: Network) -> Deferred[None]:
        return self._run(self._write, [(
            "INSERT OR REPLACE INTO networks (id, name, record) VALUES (?, ?, ?)",
            (network.id, network.name, _json(network)))])

    def delete_network(self, network_id: str) -> Deferred[None]:
        return self._run(self._write, [
            ("DELETE FROM endpoints WHERE network_id = ?", (network_id,)),
            ("DELETE FROM addresses6 WHERE network_id = ?", (network_id,)),
            ("DELETE FROM members WHERE network_id = ?", (network_id,)),
            ("DELETE FROM networks WHERE id = ?", (network_id,))])

    def put_member(self, member: Member) -> Deferred[None]:
        return self._run(self._write, [(
            "INSERT OR REPLACE INTO members (network_id, container_id, record) VALUES (?, ?, ?)",
            (member.network_id, member.container_id, _json(member)))])

    def delete_members(self, keys: list[tuple[str, str]]) -> Deferred[None]:
        """
        Forget memberships by (network ID, container ID).
        """
        return self._run(self._write, [
            ("DELETE FROM members WHERE network_id = ? AND container_id = ?", key) for key in keys])

    def replace_endpoint(self, endpoint: Endpoint) -> Deferred[None]:
        """
        Store an endpoint whose ports changed.
        """
        return self._run(self._write, [(
            "UPDATE endpoints SET record = ? WHERE network_id = ? AND container_id = ?",
            (_json(endpoint), endpoint.network_id, endpoint.container_id))])

    def put_endpoints(self, endpoints: list[Endpoint]) -> Deferred[None]:
        """
        Store new endpoints in one transaction; AlreadyExists if an address
        is taken (never expected: the manager allocates from its view).
        """
        statements: list[tuple[str, tuple[Any, ...]]] = []
        for e in endpoints:
            statements.append(("INSERT INTO endpoints (network_id, container_id, address, record) VALUES (?, ?, ?, ?)",
                               (e.network_id, e.container_id, e.address, _json(e))))
            if e.address6:
                statements.append(("INSERT INTO addresses6 (network_id, container_id, address) VALUES (?, ?, ?)",
                                   (e.network_id, e.container_id, e.address6)))
        return self._run(self._write, statements)

    def delete_endpoints(self, keys: list[tuple[str, str]]) -> Deferred[None]:
        """
        Forget endpoints by (network ID, container ID).
        """
        return self._run(self._write, [
            (f"DELETE FROM {table} WHERE network_id = ? AND container_id = ?", key)
            for key in keys for table in ("endpoints", "addresses6")])


def _json(record: Any) -> str:
    return json.dumps(unstructure(record), separators=(",", ":"))
