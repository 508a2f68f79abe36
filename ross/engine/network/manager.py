# -*- test-case-name: ross.test.integration.test_network -*-
"""
The network manager: networks (the default bridge and user-defined ones)
and the containers on them, coordinating the pieces that do the work:
addresses (L{ross.engine.network.allocation}), host ports
(L{ross.engine.network.ports}), packet rules
(L{ross.engine.network.rules}), the embedded DNS
(L{ross.engine.network.dns}) and the record (L{ross.engine.network.store}).

A container's network life, driven by the container manager:
  - L{NetworkManager.prepare} before its shim is spawned: an address on
    each of its networks (never one another container holds), its host
    ports reserved, all written through to SQLite; the /etc/hosts and
    resolv.conf it gets;
  - L{NetworkManager.attach}, with it: a network namespace made by the
    daemon (a pool thread, no fork, see L{ross.engine.network.netlink})
    for the container to join, configured (veth pairs, addresses, routes,
    and the nftables table when it publishes ports) while the shim sets
    the container up, and done before its command runs;
  - L{NetworkManager.release} when it exits: links, addresses, ports and
    rules go.
At daemon start, L{NetworkManager.start} makes the bridges and the table
exist again and L{NetworkManager.reconcile}, once the container manager knows
which containers still run, frees what belonged to the others and deletes
links nothing claims (a daemon killed mid-way leaves such).
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Collection, Iterable, Sequence

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort, IReactorTime
from twisted.logger import Logger

from ross.engine import etcfiles
from ross.engine.containers.config import CONTAINER_MODE, NETWORK_NAME
from ross.engine.events import EventBus
from ross.engine.network import ipam, netlink
from ross.engine.network.allocation import Allocator, static
from ross.engine.network.claims import SUBNET_LOCK, answer_probes, claim_all, lock_subnets
from ross.engine.network.dns import ContainerNames, NetworkDNS
from ross.engine.network.firewall import Survey
from ross.engine.network.ports import PortReservations, families, port_mappings, published
from ross.engine.network.rules import PacketRules
from ross.engine.network.store import Endpoint, EndpointTable, Member, Network, NetworkStore, PortMapping
from ross.engine.pipes import in_pool
from ross.engine.reactors import IEngineReactor
from ross.engine.runtime.spec import ContainerSpec
from ross.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from ross.interfaces import IShim

if TYPE_CHECKING:
    from ross.engine.containers.config import HostConfig
    from ross.engine.containers.store import ContainerRecord

DEFAULT_NETWORK = "bridge"
# Network modes that mean the default bridge.
DEFAULT_MODES = ("", "default", DEFAULT_NETWORK)
#: docker's networks of its other two modes: name -> driver. Listed and
#: inspected with the containers of that network mode; they hold no
#: bridge, address or rule.
PSEUDO_NETWORKS = {"host": "host", "none": "null"}
# Device names are at most 15 characters; a prefix leaves room for 8 of
# the ID it names (and an interface number).
MAX_PREFIX = 5


@attrs.frozen
class NetworkConfig:
    """
    The daemon's networking settings.

    @ivar bridge: the default network's bridge device (docker's --bridge).
    @ivar subnet: its subnet in CIDR notation; empty: the first free /16
        from 10.88.0.0 (kept across restarts once chosen).
    @ivar ipv6: the default network has IPv6 too (docker's --ipv6).
    @ivar subnet6: its IPv6 subnet (docker's --fixed-cidr-v6); empty: a
        /64 of the daemon's unique local prefix, or the bridge's own.
    @ivar table: the nftables table (family inet) holding Ross's rules.
    @ivar link_prefix: the start of host-side veth names (then part of the
        container ID and the interface's number).
    @ivar bridge_prefix: the start of user-defined networks' bridge names
        (then part of the network ID), docker's "br-" by default.
    """

    bridge: str = "ross0"
    subnet: str = ""
    table: str = "ross"
    ipv6: bool = False
    subnet6: str = ""
    link_prefix: str = "vr"
    bridge_prefix: str = "br-"


@attrs.frozen
class Attachment:
    """
    What a container start gets from the network manager: its endpoints and
    the /etc/hosts and resolv.conf contents (None: the runtime's default).
    """

    container_id: str
    endpoints: tuple[Endpoint, ...]
    hosts: str | None
    resolv_conf: str | None


def _now_ns(reactor: IReactorTime) -> int:
    return int(reactor.seconds() * 1e9)


def check_device_name(name: str, what: str) -> None:
    """
    InvalidArgument unless C{name} is a valid network device name.
    """
    if not name or len(name) > 15 or "/" in name or any(c.isspace() for c in name) or name in (".", ".."):
        raise InvalidArgument(f"invalid {what} {name[:64]!r}: 1 to 15 characters, no '/' or spaces")


def check_table_name(name: str) -> None:
    """
    InvalidArgument unless C{name} can name an nftables table.
    """
    if not re.fullmatch(r"[a-zA-Z][a-zA-Z0-9_]{0,63}", name):
        raise InvalidArgument(f"invalid nftables table name {name[:64]!r}: a letter, then letters, digits or _")


class NetworkManager:
    """
    @param root: the daemon's persistent root (C{networks.db} lives there).
    @param names_of: the names a container answers to in the embedded DNS
        besides its aliases and short ID (the container manager's records):
        see L{ContainerNames}.
    @param dns_of: the --dns servers of a container, which the embedded
        DNS forwards its other names to (L{ContainerNames.upstreams}).
    """

    _log = Logger()

    def __init__(self, reactor: IEngineReactor, root: Path, config: NetworkConfig, events: EventBus,
                 names_of: Callable[[str], Sequence[str]] = lambda cid: (),
                 dns_of: Callable[[str], Sequence[str]] = lambda cid: ()) -> None:
        check_device_name(config.bridge, "bridge name")
        check_table_name(config.table)
        for prefix in (config.link_prefix, config.bridge_prefix):
            if len(prefix) > MAX_PREFIX:
                raise InvalidArgument(f"device name prefix {prefix[:64]!r} is longer than {MAX_PREFIX} characters")
            check_device_name(prefix, "device name prefix")
        if config.subnet:
            ipam.parse_subnet(config.subnet)
        if config.subnet6:
            if not config.ipv6:
                raise InvalidArgument("an IPv6 subnet for the default network needs IPv6 on (--ipv6)")
            ipam.parse_subnet(config.subnet6, 6)
        self._reactor = reactor
        self.config = config
        self.events = events
        self._store = NetworkStore(reactor, root / "networks.db")
        self.networks: dict[str, Network] = {}
        self._names: dict[str, str] = {}
        #: Networks whose create is under way: their name is taken, but no
        #: lookup finds them (nothing joins or removes them half made).
        self._creating: set[str] = set()
        self.endpoints = EndpointTable()
        self.members: dict[tuple[str, str], Member] = {}
        self._mtu: dict[str, int] = {}
        self._addresses = Allocator(config.link_prefix, config.bridge_prefix, self.networks, self.endpoints)
        self._ports = PortReservations(reactor, self.networks)
        self._rules = PacketRules(reactor, config.table, self.networks, self.endpoints)
        # Container ID -> (fd of the network namespace made for its start,
        # the set-up under way in it), until the start is done.
        self._pending: dict[str, tuple[int, list[Deferred[Any]]]] = {}
        self._writes: dict[str, Deferred[None]] = {}
        self._claims: list[socket.socket] = []
        self._claim_ports: list[IListeningPort] = []
        names = ContainerNames(self.networks, self.endpoints, names_of, dns_of)
        self._dns = NetworkDNS(reactor, names.resolve, upstreams=names.upstreams)

    @property
    def firewall(self) -> Survey:
        """
        What the last look at the host's other firewall managers found.
        """
        return self._rules.firewall

    # ---------------------------------------------------------------- life

    async def start(self) -> None:
        """
        Load networks and endpoints, make the default network exist, every
        bridge up and the rules in place. Endpoints stay as stored until
        L{reconcile}.
        """
        # Before anything is touched: another daemon's bridge or table would
        # be taken from under it.
        self._claims = await in_pool(self._reactor, claim_all, [("bridge", self.config.bridge),
                                                                ("nftables table", self.config.table)])
        self._claim_ports = answer_probes(self._reactor, self._claims)
        networks, endpoints, members = await self._store.start()
        for m in members:
            self.members[(m.network_id, m.container_id)] = m
        for n in networks:
            self.networks[n.id] = n
            self._names[n.name] = n.id
        for e in endpoints:
            self.endpoints[(e.network_id, e.container_id)] = e
        await self._ensure_default()
        for n in list(self.networks.values()):
            await self._ensure_bridge(n)
            if n.dns:
                self._dns.serve(n.id, n.gateway)
        await self._rules.sync()
        self._rules.start()

    async def _ensure_bridge(self, network: Network) -> None:
        """
        Make the network's bridge as it should be; IPv6 forwarding on for a
        network with IPv6 (its containers reach beyond the host by it).
        """
        was_off = bool(network.subnet6) and await in_pool(self._reactor, netlink.enable_ipv6_forwarding)
        if was_off:
            self._log.warn(
                "IPv6 forwarding was off: turned on for network {name} (net.ipv6.conf.all.forwarding=1, as "
                "dockerd does). The host now routes IPv6 between its interfaces as far as its firewall lets it, "
                "and no longer takes router advertisements on interfaces with accept_ra=1 (set 2 where it "
                "needs them)", name=network.name)
        self._mtu[network.bridge] = await in_pool(
            self._reactor, netlink.ensure_bridge, network.bridge, network.gateway, _prefix(network.subnet),
            network.gateway6, _prefix(network.subnet6) if network.subnet6 else 0)

    async def _ensure_default(self) -> None:
        current = self.networks.get(self._names.get(DEFAULT_NETWORK, ""))
        wanted_subnet, wanted_subnet6 = self.config.subnet, self.config.subnet6
        if current is not None and current.bridge == self.config.bridge and (
                not wanted_subnet or wanted_subnet == current.subnet) and (
                bool(current.subnet6) == self.config.ipv6 and (not wanted_subnet6 or wanted_subnet6 == current.subnet6)):
            return
        if current is not None and current.bridge != self.config.bridge:
            # The old bridge is no longer Ross's: leave nothing of it.
            await in_pool(self._reactor, netlink.delete_link, current.bridge)
        found = await in_pool(self._reactor, netlink.bridge_address, self.config.bridge)
        taken: list[ipam.Subnet] | None = None
        gateway = None
        if wanted_subnet:
            subnet = ipam.parse_subnet(wanted_subnet)
        elif current is not None:
            subnet = ipaddress.ip_network(current.subnet)
        elif found is not None and found.network.prefixlen <= ipam.MAX_PREFIX:
            # A fresh root on a host that has the bridge: its subnet and
            # gateway, as dockerd does with docker0, rather than a second
            # subnet stacked on it.
            subnet, gateway = found.network, found.ip
            self._log.info("bridge {bridge} exists: adopting its subnet {subnet}",
                           bridge=self.config.bridge, subnet=str(subnet))
        else:
            taken = await self._taken()
            subnet = ipam.choose_subnet(taken)
        network_id = current.id if current is not None else os.urandom(32).hex()
        subnet6: ipam.Subnet | None = None
        gateway6 = None
        if not self.config.ipv6:
            pass
        elif wanted_subnet6:
            subnet6 = ipam.parse_subnet(wanted_subnet6, 6)
        elif current is not None and current.subnet6:
            subnet6, gateway6 = ipaddress.ip_network(current.subnet6), ipaddress.ip_address(current.gateway6)
        else:
            found6 = await in_pool(self._reactor, netlink.bridge_address, self.config.bridge, socket.AF_INET6)
            if found6 is not None and found6.network.prefixlen <= ipam.MAX_PREFIX6:
                subnet6, gateway6 = found6.network, found6.ip
                self._log.info("bridge {bridge} exists: adopting its IPv6 subnet {subnet}",
                               bridge=self.config.bridge, subnet=str(subnet6))
            else:
                subnet6 = ipam.choose_subnet(taken if taken is not None else await self._taken(),
                                             ipam.unique_local_pool(network_id), ipam.AUTO_PREFIX6)
        network = Network(
            id=network_id, name=DEFAULT_NETWORK, bridge=self.config.bridge, subnet=str(subnet),
            gateway=str(gateway or subnet.network_address + 1),
            created_ns=current.created_ns if current else _now_ns(self._reactor), builtin=True,
            subnet6=str(subnet6) if subnet6 is not None else "",
            gateway6=str(gateway6 or subnet6.network_address + 1) if subnet6 is not None else "")
        if current is not None and current.subnet != network.subnet:
            # IPv6 coming or going needs no new bridge: the containers on it
            # keep their IPv4 (those started from now on get both).
            await in_pool(self._reactor, netlink.delete_link, current.bridge)
        await self._store.put_network(network)
        self.networks[network.id] = network
        self._names[network.name] = network.id
        self._log.info("default network {name}: bridge {bridge}, subnet {subnet}{v6}",
                       name=network.name, bridge=network.bridge, subnet=network.subnet,
                       v6=f", IPv6 subnet {network.subnet6}" if network.subnet6 else "")

    async def _taken(self) -> list[ipam.Subnet]:
        """
        What a new subnet must not overlap: the host's routes and
        addresses, the networks' subnets.
        """
        taken: list[ipam.Subnet] = await in_pool(self._reactor, netlink.routed_networks)
        for n in self.networks.values():
            taken += [ipaddress.ip_network(subnet) for subnet in (n.subnet, n.subnet6) if subnet]
        return taken

    async def reconcile(self, live: Collection[str]) -> None:
        """
        Keep the endpoints of containers in C{live} (running ones: their
        ports are reserved again), free every other, and delete links on
        Ross's bridges that no live endpoint claims.
        """
        dead = [e for e in self.endpoints.values() if e.container_id not in live]
        for cid in {e.container_id for e in dead}:
            await self.release(cid)
        for cid in {e.container_id for e in self.endpoints.values()}:
            try:
                self._ports.reserve_all(cid, self.endpoints.of(cid))
            except FailedPrecondition as e:
                self._log.warn("container {id}: {error}", id=cid, error=str(e))
        claimed = {e.host_link for e in self.endpoints.values()}
        bridges = {n.bridge for n in self.networks.values()}
        links = await in_pool(self._reactor, netlink.links)
        for name, master in links.items():
            if name not in claimed and master in bridges:
                if await in_pool(self._reactor, netlink.delete_link, name):
                    self._log.info("deleted leftover link {name}", name=name)
        # The rules need no new replacement: L{start} made them for every
        # stored endpoint, and releasing one that published ports above
        # replaced them again. (One replacement is some 140 ms of a
        # restart's way to its first answer.)

    async def stop(self) -> None:
        """
        Let go of the port reservations and the database. Bridges, links and
        rules stay: containers run on without the daemon.
        """
        checked = self._rules.stop()
        for port in self._claim_ports:
            port.stopListening()
        for held in self._claims:
            held.close()
        # A look under way finishes before the database goes.
        await checked
        self._ports.unreserve_all()
        await self._dns.stop()
        await self._store.stop()

    # ---------------------------------------------------------------- lookup

    def lookup(self, ref: str) -> Network:
        """
        A network by name, ID or unique ID prefix; NotFound otherwise.
        """
        if ref in self._names:
            found = [self.networks[self._names[ref]]]
        elif ref in self.networks:
            found = [self.networks[ref]]
        else:
            found = [n for n in self.networks.values() if ref and n.id.startswith(ref)]
        found = [n for n in found if n.id not in self._creating]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise InvalidArgument(f"network {ref} is ambiguous ({len(found)} matches found based on ID prefix)")
        raise NotFound(f"network {ref[:64]} not found")

    def host_gateway(self) -> str:
        """
        The host's address on the default bridge: what --add-host
        NAME:host-gateway names, as in docker.
        """
        default = self.networks.get(self._names.get(DEFAULT_NETWORK, ""))
        return default.gateway if default is not None else ""

    def network_for_mode(self, mode: str) -> Network | None:
        """
        The network a container with network mode C{mode} joins at start;
        None for "none", "host" and "container:NAME". NotFound for an
        unknown network.
        """
        if mode in ("none", "host") or mode.startswith(CONTAINER_MODE):
            return None
        return self.lookup(DEFAULT_NETWORK if mode in DEFAULT_MODES else mode)

    def check(self, host: HostConfig) -> None:
        """
        Refuse at create what could not start with HostConfig C{host}: an
        unknown network, --ip, --ip6 or --network-alias off a user-defined
        network (or an address outside its subnets), a port that cannot be
        published.
        """
        network = self.network_for_mode(host.network_mode)
        for ip, version in ((host.ip, 4), (host.ip6, 6)):
            if ip:
                if network is None or network.builtin:
                    raise InvalidArgument("user specified IP address is supported on user defined networks only")
                static(network, ip, version, ())
        if host.network_aliases and (network is None or network.builtin):
            raise InvalidArgument("network-scoped alias is supported only for containers in user defined networks")
        for alias in host.network_aliases:
            if not NETWORK_NAME.match(alias):
                raise InvalidArgument(f"invalid network alias {alias[:64]!r}")
        mappings = port_mappings([(b.container_port, b.host_ip, b.host_port) for b in host.port_bindings],
                                 host.publish_all_ports, ())
        if network is not None and any(published(p) for p in mappings):
            if network.internal:
                raise InvalidArgument(f"network {network.name} is internal: ports cannot be published on it")
            for p in mappings:
                families(p, network, bool(network.subnet6))

    def endpoints_of(self, cid: str) -> list[tuple[Network, Endpoint]]:
        """
        The container's endpoints with their networks, first interface
        first.
        """
        found = [(self.networks[e.network_id], e) for e in self.endpoints.of(cid) if e.network_id in self.networks]
        return sorted(found, key=lambda pair: pair[1].ifname)

    # ---------------------------------------------------------------- containers

    async def attach(self, record: ContainerRecord, spec: ContainerSpec,
                     ) -> tuple[ContainerSpec, Callable[[IShim], Any] | None]:
        """
        For a start of container C{record} (a ContainerRecord) with runtime
        spec C{spec}: the spec joining the network namespace made for it,
        with its /etc/hosts and resolv.conf, and the hook that waits, once
        its shim has set it up, for that namespace's configuration (None
        without a network of its own: "none", "host"). A container with a
        user namespace of its own (C{spec.userns}) keeps the network
        namespace its shim made, owned by that user namespace (so its root
        may bind port 80 or open raw sockets there, as docker's): the hook
        configures that one.
        """
        c, h = record.config, record.host
        ports: list[PortMapping] = []
        if h.network_mode not in ("none", "host"):
            ports = port_mappings([(b.container_port, b.host_ip, b.host_port) for b in h.port_bindings],
                                  h.publish_all_ports, c.exposed_ports)
        attachment = await self.prepare(record.id, etcfiles.host_names(c.hostname or record.id[:12], c.domainname),
                                        h.network_mode, h.ip, ports,
                                        h.extra_hosts, h.dns, h.network_aliases, h.dns_search, h.dns_options,
                                        h.mac_address, h.ip6)
        if attachment is None:
            return spec, None
        cid = record.id
        interfaces = [self._interface(e) for e in attachment.endpoints]
        publishes = any(p.host_port for e in attachment.endpoints for p in e.ports)

        def configure(write: Deferred[None], namespace: int) -> None:
            waits = [write, in_pool(self._reactor, _plug_all, interfaces, namespace)]
            if publishes:
                waits.append(Deferred.fromCoroutine(self._rules.sync()))
            self._pending[cid] = (namespace, waits)

        spec = attrs.evolve(spec, hosts=attachment.hosts,
                            resolv_conf=attachment.resolv_conf if attachment.resolv_conf is not None else spec.resolv_conf)
        if spec.userns is not None:
            write = self._writes.pop(cid)
            # No namespace yet; a start that fails before the hook still
            # waits for the write in release.
            self._pending[cid] = (-1, [write])

            async def plug(shim: IShim) -> None:
                namespace = await in_pool(self._reactor, netlink.open_namespace, shim.pid)
                self._pending.pop(cid, None)
                configure(write, namespace)
                await self._settle(cid)

            return spec, plug
        # The namespace is made here and configured while the shim sets the
        # container up in it: the network costs a start next to nothing.
        try:
            namespace = await in_pool(self._reactor, netlink.create_namespace)
        except BaseException:
            # The endpoints' write is let finish (its own error does not
            # matter) so that release deletes what it wrote.
            try:
                await self._writes.pop(cid)
            except Exception as e:
                self._log.info("container {cid}: endpoints not written after a failed set-up: {error}",
                               cid=cid[:12], error=e)
            await self.release(cid)
            raise
        configure(self._writes.pop(cid), namespace)

        async def ready(shim: IShim) -> None:
            await self._settle(cid)

        return attrs.evolve(spec, network=f"/proc/{os.getpid()}/fd/{namespace}"), ready

    async def _settle(self, cid: str) -> None:
        """
        Wait for the set-up L{attach} started (raising its first error) and
        let go of the namespace: the container holds it now.
        """
        pending = self._pending.pop(cid, None)
        if pending is None:
            return
        namespace, waits = pending
        try:
            errors = []
            for d in waits:
                try:
                    await d
                except Exception as e:
                    errors.append(e)
            if errors:
                raise errors[0]
        finally:
            if namespace >= 0:
                os.close(namespace)

    def _interface(self, e: Endpoint) -> netlink.Interface:
        n = self.networks[e.network_id]
        return netlink.Interface(
            host_name=e.host_link, name=e.ifname, bridge=n.bridge, address=e.address,
            prefixlen=_prefix(n.subnet), gateway=n.gateway, mac=e.mac, mtu=self._mtu.get(n.bridge, 1500),
            default_route=e.ifname == "eth0", address6=e.address6,
            prefixlen6=_prefix(n.subnet6) if e.address6 else 0, gateway6=n.gateway6 if e.address6 else "")

    def settings(self, record: ContainerRecord) -> list[tuple[Network, Endpoint | None]]:
        """
        The container's networks for inspect: its endpoints while it runs,
        else the networks it would join (that of its mode, then those it was
        connected to), without an address.
        """
        found: list[tuple[Network, Endpoint | None]] = list(self.endpoints_of(record.id))
        if not found:
            try:
                network = self.network_for_mode(record.host.network_mode)
            except NotFound:
                network = None
            if network is not None:
                found.append((network, None))
            found += [(self.networks[nid], None) for nid, cid in sorted(self.members)
                      if cid == record.id and nid in self.networks and (network is None or nid != network.id)]
        return found

    async def prepare(self, cid: str, hostname: str, network_mode: str, ip: str,
                      ports: Sequence[PortMapping], extra_hosts: Iterable[str], dns: Sequence[str],
                      aliases: Sequence[str] = (), dns_search: Sequence[str] = (), dns_options: Sequence[str] = (),
                      mac: str = "", ip6: str = "") -> Attachment | None:
        """
        Allocate the container's addresses, on the network of its mode
        (eth0, where its ports are published) and on those it was connected
        to, and reserve its host ports (FailedPrecondition, nothing kept,
        when one is taken); None when it has no network of its own ("none",
        "host"). C{hostname} is what /etc/hosts names its address
        (L{etcfiles.host_names}).
        """
        # Read first: from the network's lookup to the endpoints' record, no
        # await but a release lets another change in.
        host_resolv = await in_pool(self._reactor, etcfiles.read_host_resolv)
        network = self.network_for_mode(network_mode)
        if network is None:
            return None
        if self.endpoints.of(cid):
            # A start that failed half-way left them: start over.
            await self.release(cid)
        wanted = [(network, ip, ip6, tuple(aliases), tuple(ports))] + [
            (self.networks[m.network_id], m.address, m.address6, m.aliases, ())
            for m in self._members_of(cid) if m.network_id != network.id]
        endpoints = []
        try:
            for number, (n, address, address6, aliases, mappings) in enumerate(wanted):
                endpoints.append(self._addresses.allocate(n, cid, address, number, aliases, mappings,
                                                          mac if number == 0 else "", address6))
            endpoints = self._ports.reserve_all(cid, endpoints)
            for e in endpoints:
                self.endpoints[(e.network_id, cid)] = e
        except BaseException:
            self._ports.unreserve(cid)
            for e in endpoints:
                self.endpoints.pop((e.network_id, cid), None)
            raise
        hosts, resolv = self._files(network, endpoints[0], hostname, extra_hosts, dns, dns_search, dns_options,
                                    host_resolv)
        # Written while the container is set up; waited for before its
        # command runs, so a running container's addresses are on disk.
        self._writes[cid] = self._store.put_endpoints(endpoints)
        return Attachment(cid, tuple(endpoints), hosts, resolv)

    def _files(self, network: Network, endpoint: Endpoint, hostname: str, extra_hosts: Iterable[str],
               dns: Sequence[str], dns_search: Sequence[str], dns_options: Sequence[str],
               host_resolv: str) -> tuple[str, str | None]:
        """
        /etc/hosts and resolv.conf of a container whose first interface is
        C{endpoint} on C{network}, from the host's resolv.conf
        C{host_resolv}.
        """
        hosts = etcfiles.hosts_file(hostname, [a for a in (endpoint.address, endpoint.address6) if a],
                                    extra_hosts, self.host_gateway())
        if network.dns:
            # The network's server stays the container's: it answers the
            # names of the network and forwards the rest to the --dns
            # servers (L{ContainerNames.upstreams}), as docker's does.
            base = etcfiles.resolv_via(network.gateway, host_resolv)
            return hosts, etcfiles.resolv_conf((), dns_search, dns_options, base, host=host_resolv)
        return hosts, etcfiles.resolv_conf(dns, dns_search, dns_options, None, host=host_resolv)

    async def files_of(self, record: ContainerRecord) -> tuple[str, str | None] | None:
        """
        The /etc/hosts and resolv.conf running container C{record} got
        from its network (what --network container:NAME shares); None
        without a network of its own.
        """
        host_resolv = await in_pool(self._reactor, etcfiles.read_host_resolv)
        endpoints = self.endpoints_of(record.id)
        if not endpoints:
            return None
        network, endpoint = endpoints[0]
        c, h = record.config, record.host
        return self._files(network, endpoint, etcfiles.host_names(c.hostname or record.id[:12], c.domainname),
                           h.extra_hosts, h.dns, h.dns_search, h.dns_options, host_resolv)

    def _members_of(self, cid: str) -> list[Member]:
        return sorted((m for m in self.members.values() if m.container_id == cid and m.network_id in self.networks),
                      key=lambda m: m.network_id)

    async def release(self, cid: str) -> None:
        """
        Free everything the container holds: addresses, host ports, links
        (normally gone with its namespace), rules.
        """
        try:
            await self._settle(cid)
        except Exception as e:
            # Its set-up failed and was reported to whoever started it;
            # what it made is released below all the same.
            self._log.info("container {cid}: releasing a network set-up that failed: {error}",
                           cid=cid[:12], error=e)
        gone = self.endpoints.of(cid)
        if not gone:
            return
        await self._release(cid, gone)

    async def _release(self, cid: str, gone: list[Endpoint]) -> None:
        """
        Free C{gone}, every step tried whatever the others did, errors
        logged rather than raised (a stop or a failed start goes on): an
        endpoint whose link could not be deleted stays, address included,
        for the next release or the next daemon start; stale rules are
        replaced by the periodic check.
        """
        if any(e.ports for e in gone):
            # Only the first interface publishes ports.
            self._ports.unreserve(cid)
        freed = []
        for e in gone:
            # Usually gone with the container's namespace already: a look
            # (an ioctl in the daemon's own namespace, which sysfs may not
            # show) spares the thread.
            if netlink.exists(e.host_link):
                try:
                    await in_pool(self._reactor, netlink.delete_link, e.host_link)
                except Exception as error:
                    self._log.warn("container {id}: cannot delete link {link}: {error}",
                                   id=cid, link=e.host_link, error=str(error))
                    continue
            freed.append(e)
        # Forgotten in memory only once the links are gone: the address is
        # not handed out while something may still answer to it.
        for e in freed:
            self.endpoints.pop((e.network_id, cid), None)
        try:
            await self._store.delete_endpoints([(e.network_id, cid) for e in freed])
        except Exception as error:
            # Reconciled at the next start: the container no longer runs.
            self._log.warn("container {id}: cannot forget its endpoints: {error}", id=cid, error=str(error))
        if any(p.host_port for e in freed for p in e.ports):
            try:
                await self._rules.sync()
            except Exception as error:
                self._log.warn("container {id}: rules not updated yet: {error}", id=cid, error=str(error))

    async def removed(self, cid: str) -> None:
        """
        The container is being removed: release it and forget the networks
        it was connected to.
        """
        await self.release(cid)
        keys = [key for key in self.members if key[1] == cid]
        for key in keys:
            del self.members[key]
        if keys:
            await self._store.delete_members(keys)

    def pseudo_network(self, ref: str) -> Network | None:
        """
        docker's "host" or "none" network when C{ref} names one (by name or
        ID prefix), else None.
        """
        default = self.lookup(DEFAULT_NETWORK)
        for name, driver in PSEUDO_NETWORKS.items():
            network_id = hashlib.sha256(f"{default.id}/{name}".encode()).hexdigest()
            if ref == name or (len(ref) >= 3 and network_id.startswith(ref)):
                return Network(id=network_id, name=name, bridge="", subnet="", gateway="",
                               created_ns=default.created_ns, driver=driver, builtin=True)
        return None

    def all_networks(self) -> list[Network]:
        """
        Every network by name, the pseudo ones too.
        """
        found = list(self.networks.values())
        found += [p for p in (self.pseudo_network(name) for name in PSEUDO_NETWORKS) if p is not None]
        return sorted(found, key=lambda n: n.name)

    async def prune(self, labels: Sequence[tuple[str, str, str]] = ()) -> list[str]:
        """
        Remove the user-defined networks no container is on now (as docker:
        connected but stopped does not count) that have every label of
        C{labels} ((key, "=" or "", value) each); their names.
        """
        removed = []
        for network in sorted(self.networks.values(), key=lambda n: n.name):
            if network.builtin or any(k not in network.labels or (eq and network.labels[k] != v)
                                      for k, eq, v in labels):
                continue
            if any(endpoint is not None for _, endpoint, _ in self.containers_of(network.id)):
                continue
            try:
                await self.remove_network(network.id)
            except (NotFound, FailedPrecondition):
                # Removed, still being made, or joined since the list
                # was taken: not this prune's to remove.
                continue
            removed.append(network.name)
        return removed

    def containers_of(self, network_id: str) -> list[tuple[str, Endpoint | None, tuple[str, ...]]]:
        """
        (container ID, endpoint while it runs, aliases) of each container
        on the network: those with an endpoint and those connected to it.
        """
        found: dict[str, tuple[str, Endpoint | None, tuple[str, ...]]] = {}
        for (nid, cid), m in self.members.items():
            if nid == network_id:
                found[cid] = (cid, None, m.aliases)
        for (nid, cid), e in self.endpoints.items():
            if nid == network_id:
                found[cid] = (cid, e, e.aliases)
        return sorted(found.values())

    # ---------------------------------------------------------------- networks

    async def create_network(self, name: str, driver: str = "", subnet: str = "", gateway: str = "",
                             labels: dict[str, str] | None = None, internal: bool = False, ipv6: bool = False,
                             subnet6: str = "", gateway6: str = "") -> Network:
        """
        A new bridge network with its own bridge, subnet and DNS server;
        C{internal}: nothing beyond it but the host; C{ipv6}: with an IPv6
        subnet too (C{subnet6}, or a /64 of the daemon's unique local
        prefix).
        """
        # A subnet to choose: another daemon on the host choosing at the
        # same moment would see the same free one.
        chooses = not subnet or (ipv6 and not subnet6)
        lock = await in_pool(self._reactor, lock_subnets) if chooses else None
        if chooses and lock is None:
            self._log.warn("network {name}: the host's subnet lock ({path}) could not be had in 10 s: "
                           "choosing without it", name=name, path=SUBNET_LOCK)
        try:
            return await self._create_network(name, driver, subnet, gateway, labels, internal, ipv6, subnet6,
                                              gateway6)
        finally:
            if lock is not None:
                os.close(lock)

    async def _create_network(self, name: str, driver: str, subnet: str, gateway: str,
                              labels: dict[str, str] | None, internal: bool, ipv6: bool,
                              subnet6: str, gateway6: str) -> Network:
        if not NETWORK_NAME.match(name):
            raise InvalidArgument(f"invalid network name {name[:64]!r}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
        if driver not in ("", "bridge"):
            raise InvalidArgument(f"plugin \"{driver[:64]}\" not found: only the bridge driver is supported")
        if (gateway and not subnet) or (gateway6 and not subnet6):
            raise InvalidArgument("a gateway needs a subnet: give --subnet too")
        if subnet6 and not ipv6:
            raise InvalidArgument("an IPv6 subnet needs IPv6 on the network: give --ipv6 too")
        routed = [] if subnet and (subnet6 or not ipv6) else await in_pool(self._reactor, netlink.routed_networks)
        # From here to the claim, no await: two creates racing for a name or
        # a subnet cannot both get it.
        if name in self._names or name in ("host", "none", "default"):
            raise AlreadyExists(f"network with name {name} already exists")
        ours = [ipaddress.ip_network(a) for n in self.networks.values() for a in (n.subnet, n.subnet6) if a]
        net, gw = _pool(subnet, gateway, 4, ours, lambda: ipam.choose_subnet(list(routed) + ours))
        net6 = gw6 = None
        if ipv6:
            pool6 = ipam.unique_local_pool(self.lookup(DEFAULT_NETWORK).id)
            net6, gw6 = _pool(subnet6, gateway6, 6, ours,
                              lambda: ipam.choose_subnet(list(routed) + ours, pool6, ipam.AUTO_PREFIX6))
        network_id = os.urandom(32).hex()
        network = Network(id=network_id, name=name, bridge=self._addresses.device(network_id), subnet=str(net),
                          gateway=str(gw), created_ns=_now_ns(self._reactor), labels=dict(labels or {}), dns=True,
                          internal=internal, subnet6=str(net6) if net6 else "", gateway6=str(gw6) if gw6 else "")
        self._names[name] = network_id
        self.networks[network_id] = network
        self._creating.add(network_id)
        try:
            await self._ensure_bridge(network)
            await self._store.put_network(network)
            self._dns.serve(network_id, network.gateway)
            await self._rules.sync()
        except BaseException:
            del self._names[name]
            del self.networks[network_id]
            self._mtu.pop(network.bridge, None)
            await self._undo_network(network)
            raise
        finally:
            self._creating.discard(network_id)
        self.events.publish("network", "create", network_id, name=name, driver="bridge")
        return network

    async def _undo_network(self, network: Network) -> None:
        """
        Take back what a failed create made (already out of memory), every
        step tried, errors logged: the create's own error is the one told.
        """
        steps: list[tuple[str, Callable[[], Deferred[Any]]]] = [
            ("DNS server", lambda: self._dns.stop_serving(network.id)),
            ("record", lambda: self._store.delete_network(network.id)),
            ("bridge", lambda: in_pool(self._reactor, netlink.delete_link, network.bridge)),
            ("rules", lambda: Deferred.fromCoroutine(self._rules.sync())),
        ]
        for what, step in steps:
            try:
                await step()
            except Exception as error:
                self._log.warn("network {name}: cannot undo its {what}: {error}",
                               name=network.name, what=what, error=str(error))

    async def remove_network(self, ref: str) -> Network:
        """
        Remove a user-defined network no running container is on.
        """
        network = self.lookup(ref)
        if network.builtin:
            raise FailedPrecondition(f"{network.name} is a pre-defined network and cannot be removed")
        if any(nid == network.id for nid, _ in self.endpoints):
            raise FailedPrecondition(
                f"error while removing network: network {network.name} id {network.id} has active endpoints")
        # Out of every lookup before the first await: a start or a connect
        # that comes meanwhile finds no such network, a second rm none to
        # remove. The bridge first, then the record: a failure in between
        # puts the network back, to be removed again, or its bridge made
        # again at the next daemon start; never a bridge nothing knows.
        # Its DNS server goes before its subnet is free again: a network
        # made meanwhile on the same subnet listens on the same gateway.
        del self.networks[network.id]
        self._names.pop(network.name, None)
        try:
            await self._dns.stop_serving(network.id)
            await in_pool(self._reactor, netlink.delete_link, network.bridge)
            await self._store.delete_network(network.id)
        except BaseException:
            self.networks[network.id] = network
            self._names.setdefault(network.name, network.id)
            self._dns.serve(network.id, network.gateway)
            raise
        self._mtu.pop(network.bridge, None)
        for key in [k for k in self.members if k[0] == network.id]:
            del self.members[key]
        try:
            await self._rules.sync()
        except Exception as error:
            self._log.warn("network {name}: rules not updated yet: {error}", name=network.name, error=str(error))
        self.events.publish("network", "destroy", network.id, name=network.name, driver="bridge")
        return network

    async def connect(self, ref: str, record: ContainerRecord, pid: int, ip: str = "", aliases: Sequence[str] = (),
                      ip6: str = "") -> None:
        """
        Connect container C{record} to a network: remembered for its next
        starts, and plugged at once when it runs (C{pid} its process, 0
        when it does not run).
        """
        network = self.lookup(ref)
        cid = record.id
        primary = self.network_for_mode(record.host.network_mode) if record.host.network_mode != "host" else None
        if record.host.network_mode in ("host", "none") or record.host.network_mode.startswith(CONTAINER_MODE):
            raise FailedPrecondition(
                f"container {record.name} uses network mode {record.host.network_mode}: it cannot be connected to a network")
        if (primary is not None and primary.id == network.id) or (network.id, cid) in self.members:
            raise FailedPrecondition(f"endpoint with name {record.name} already exists in network {network.name}")
        for alias in aliases:
            if not NETWORK_NAME.match(alias):
                raise InvalidArgument(f"invalid alias {alias[:64]!r}")
        for address, version in ((ip, 4), (ip6, 6)):
            if address:
                if network.builtin:
                    raise InvalidArgument("user specified IP address is supported on user defined networks only")
                static(network, address, version, self._addresses.used(network, version))
        member = Member(network.id, cid, ip, tuple(aliases), ip6)
        self.members[(network.id, cid)] = member
        try:
            await self._store.put_member(member)
            if network.id not in self.networks:
                raise NotFound(f"network {network.name} not found: removed meanwhile")
            if pid:
                numbers = {int(e.ifname[3:]) for e in self.endpoints.of(cid)}
                number = min(set(range(len(numbers) + 1)) - numbers)
                endpoint = self._addresses.allocate(network, cid, ip, number, tuple(aliases), (), ip6=ip6)
                try:
                    await self._store.put_endpoints([endpoint])
                    await in_pool(self._reactor, _plug_into, self._interface(endpoint), pid)
                except NotFound:
                    # Its process exited meanwhile: connected as a stopped
                    # container is, for its next start.
                    await self._release(cid, [endpoint])
                except BaseException:
                    await self._release(cid, [endpoint])
                    raise
        except BaseException:
            self.members.pop((network.id, cid), None)
            await self._store.delete_members([(network.id, cid)])
            raise
        self.events.publish("network", "connect", network.id, name=network.name, container=cid)

    async def disconnect(self, ref: str, record: ContainerRecord) -> None:
        """
        Disconnect a container that L{connect} connected; its interface
        goes at once.
        """
        network = self.lookup(ref)
        cid = record.id
        if (network.id, cid) not in self.members:
            raise FailedPrecondition(f"container {record.name} is not connected to network {network.name}"
                                     + (" by `network connect`: it is its network mode"
                                        if (network.id, cid) in self.endpoints else ""))
        # Claimed before any await: a second disconnect meanwhile is told
        # the container is not connected.
        member = self.members.pop((network.id, cid))
        endpoint = self.endpoints.get((network.id, cid))
        try:
            if endpoint is not None:
                await self._release(cid, [endpoint])
            await self._store.delete_members([(network.id, cid)])
        except BaseException:
            self.members.setdefault((network.id, cid), member)
            raise
        self.events.publish("network", "disconnect", network.id, name=network.name, container=cid)

    # ---------------------------------------------------------------- ports

    def _publishing(self, cid: str) -> Endpoint:
        """
        The endpoint a running container publishes its ports on (eth0).
        """
        found = [e for _, e in self.endpoints_of(cid) if e.ifname == "eth0"]
        if not found:
            raise FailedPrecondition("the container has no network interface to publish on (not running, or "
                                     "network mode host or none)")
        return found[0]

    async def publish(self, cid: str, container_port: str, host_ip: str, host_port: str) -> PortMapping:
        """
        Publish a port of a running container at once (beyond docker): its
        host port reserved (refused when taken, as at start), its rule
        added; the mapping as published.
        """
        endpoint = self._publishing(cid)
        if self.networks[endpoint.network_id].internal:
            raise InvalidArgument(f"network {self.networks[endpoint.network_id].name} is internal: "
                                  "ports cannot be published on it")
        wanted = port_mappings([(container_port, host_ip, host_port)], False, ())[0]
        mapping = self._ports.reserve(cid, wanted, endpoint)
        kept = tuple(p for p in endpoint.ports if p.host_port or p.container_port != mapping.container_port)
        updated = attrs.evolve(endpoint, ports=kept + (mapping,))
        key = (endpoint.network_id, cid)
        self.endpoints[key] = updated
        try:
            await self._store.replace_endpoint(updated)
            await self._rules.sync()
        except BaseException:
            self.endpoints[key] = endpoint
            self._ports.close(cid, mapping)
            await self._undo_ports(endpoint)
            raise
        return mapping

    async def unpublish(self, cid: str, container_port: str, host_ip: str = "", host_port: int = 0,
                        ) -> list[PortMapping]:
        """
        Unpublish the ports of a running container matching
        C{container_port} (and C{host_ip}, C{host_port} when given): rules
        and reservations go at once. The mappings removed.
        """
        endpoint = self._publishing(cid)
        gone = [p for p in endpoint.ports if p.host_port > 0 and p.container_port == container_port
                and (not host_ip or p.host_ip == host_ip) and (not host_port or p.host_port == host_port)]
        if not gone:
            return []
        updated = attrs.evolve(endpoint, ports=tuple(p for p in endpoint.ports if p not in gone))
        await self._store.replace_endpoint(updated)
        self.endpoints[(endpoint.network_id, cid)] = updated
        for p in gone:
            self._ports.close(cid, p)
        try:
            await self._rules.sync()
        except Exception as error:
            self._log.warn("container {id}: rules not updated yet: {error}", id=cid, error=str(error))
        return gone

    async def _undo_ports(self, endpoint: Endpoint) -> None:
        """
        Put back an endpoint's stored ports and rules after a failed change
        (errors logged: the change's own is the one told).
        """
        try:
            await self._store.replace_endpoint(endpoint)
            await self._rules.sync()
        except Exception as error:
            self._log.warn("container {id}: ports not restored yet: {error}", id=endpoint.container_id,
                           error=str(error))


def _pool(subnet: str, gateway: str, version: int, ours: list[ipam.Subnet],
          choose: Callable[[], ipam.Subnet]) -> tuple[ipam.Subnet, ipam.Address]:
    """
    A new network's subnet and gateway of IP C{version}: the ones asked
    for, checked against C{ours} (the other networks'), or C{choose}'s.
    """
    if subnet:
        net = ipam.parse_subnet(subnet, version)
        clash = ipam.overlapping(net, ours)
        if clash is not None:
            raise FailedPrecondition(f"invalid pool request: Pool overlaps with other one on this address space ({clash})")
    else:
        net = choose()
    return net, ipam.parse_gateway(gateway, net) if gateway else net.network_address + 1


def _plug_all(interfaces: list[netlink.Interface], namespace: int) -> None:
    for interface in interfaces:
        netlink.plug(interface, namespace)


def _plug_into(interface: netlink.Interface, pid: int) -> None:
    namespace = netlink.open_namespace(pid)
    try:
        netlink.plug(interface, namespace)
    finally:
        os.close(namespace)


def _prefix(subnet: str) -> int:
    return ipaddress.ip_network(subnet).prefixlen


def network_matcher(key: str, value: str) -> Callable[[Any], bool]:
    """
    docker's network list filter C{key}=C{value}, on anything with a
    network's name, id, driver, labels and builtin.
    """
    if key == "name":
        return lambda n: value in n.name
    if key == "id":
        return lambda n: bool(n.id.startswith(value))
    if key == "driver":
        return lambda n: bool(n.driver == value)
    if key == "label":
        k, eq, v = value.partition("=")
        return lambda n: k in n.labels and (not eq or n.labels[k] == v)
    if key == "type":
        if value not in ("builtin", "custom"):
            raise InvalidArgument(f"invalid filter 'type={value}': use builtin or custom")
        return lambda n: bool(n.builtin == (value == "builtin"))
    if key == "scope":
        return lambda n: value == "local"
    raise InvalidArgument(f"invalid filter '{key}'")
