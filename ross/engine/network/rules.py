# -*- test-case-name: ross.test.integration.test_network_faults -*-
"""
Keeping the packet rules as the networks are: Ross's nftables table
(L{ross.engine.network.nft}) and its accept rules in other firewall
managers' chains (L{ross.engine.network.firewall}), both rendered whole
from the networks and the published ports, replaced after every change and
looked at again every few seconds.
"""

from __future__ import annotations

from typing import Mapping

from twisted.internet.defer import Deferred, DeferredLock
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from ross.engine.network import firewall, netlink, nft
from ross.engine.network.ports import bind_host, families
from ross.engine.network.store import Endpoint, Network
from ross.engine.pipes import in_pool
from ross.engine.reactors import IEngineReactor

# Seconds between two looks at other firewall managers' chains, to put back
# Ross's accept rules when one of them rebuilt its chains.
FIREWALL_RECHECK = 5.0


class PacketRules:
    """
    The rules of C{networks} and the ports their C{endpoints} publish, in
    nftables table C{table} and the host's other firewall managers.

    @param networks: the networks by ID, as the network manager keeps them.
    @param endpoints: the endpoints by (network ID, container ID), likewise.
    """

    _log = Logger()

    def __init__(self, reactor: IEngineReactor, table: str, networks: Mapping[str, Network],
                 endpoints: Mapping[tuple[str, str], Endpoint]) -> None:
        self._reactor = reactor
        self._table = table
        self._networks = networks
        self._endpoints = endpoints
        self._lock = DeferredLock()
        self._dirty = False
        # Whether the table publishes ports on [::1] itself (the kernel can,
        # unless br_netfilter sees bridged IPv6); None before the first.
        self._loopback6: bool | None = None
        #: What the last look at the host's other firewall managers found.
        self.firewall = firewall.Survey()
        #: Every chain Ross has kept rules in since it started: one that
        #: another manager rebuilt may be missing from a look made right
        #: in the middle of that (a table deleted, then made again).
        self._kept: set[firewall.ForeignChain] = set()
        self._check = LoopingCall(self._recheck)
        self._check.clock = reactor

    def start(self) -> None:
        """
        Look at the other managers' chains every few seconds from now on.
        """
        self._check.start(FIREWALL_RECHECK, now=False)

    def stop(self) -> Deferred[None]:
        """
        Look no more; fires once a look under way is done.
        """
        if self._check.running:
            self._check.stop()
        return self._lock.acquire().addCallback(lambda lock: lock.release())

    async def sync(self) -> None:
        """
        Make the rules match the networks and endpoints; concurrent changes
        share one replacement.
        """
        self._dirty = True
        await self._lock.acquire()
        try:
            if self._dirty:
                await self._replace()
        finally:
            self._lock.release()

    async def _replace(self) -> None:
        """
        Replace the table and the firewall rules (the lock held). A failure
        leaves the rules marked stale: the next change or the periodic
        check tries again, so no rule outlives what it was for.
        """
        self._dirty = False
        bridges = [nft.BridgeRules(n.bridge, n.subnet, n.internal, n.subnet6) for n in self._networks.values()]
        forwards = []
        for e in self._endpoints.values():
            for p in e.ports:
                if p.host_port > 0:
                    for version in families(p, self._networks[e.network_id], bool(e.address6)):
                        forwards.append(nft.Forward(p.proto, bind_host(p.host_ip, version), p.host_port,
                                                    e.address if version == 4 else e.address6, p.port))
        try:
            self._loopback6 = await in_pool(self._reactor, _replace_table, self._table, bridges, forwards)
            await self._sync_firewall()
        except BaseException:
            self._dirty = True
            raise

    async def _sync_firewall(self, restoring: bool = False) -> None:
        """
        Ross's accept rules in other firewall managers' chains, for the
        networks as they are (the lock held); C{restoring}: nothing of
        Ross's changed, so a rule written is one another program took away.
        """
        openings = [firewall.Opening(n.bridge, n.gateway if n.dns else "", n.internal, bool(n.subnet6))
                    for n in self._networks.values()]
        survey = await in_pool(self._reactor, firewall.sync, self._table, openings)
        for chain in survey.chains:
            if chain not in self._kept:
                self._log.info("firewall chain {chain} can drop Ross's traffic: Ross's bridges get accept rules there",
                               chain=str(chain))
        if restoring:
            for chain in set(survey.changed) & self._kept:
                self._log.info("put Ross's accept rules back in {chain}", chain=str(chain))
        self._kept.update(survey.chains)
        for problem in set(survey.problems) - set(self.firewall.problems):
            self._log.warn("cannot keep Ross's traffic open in the host's firewall: {problem}", problem=problem)
        self.firewall = survey

    async def _recheck(self) -> None:
        """
        The periodic look at other managers' chains: a manager that rebuilt
        them (dockerd restarting, a firewalld reload) dropped Ross's rules.
        Stale rules (a replacement failed) are replaced first, and so are
        rules whose way of publishing on [::1] no longer works (br_netfilter
        loaded or unloaded meanwhile).
        """
        await self._lock.acquire()
        try:
            if self._dirty or (self._loopback6 is not None
                               and self._loopback6 == await in_pool(self._reactor, netlink.bridged_ipv6_filtered)):
                await self._replace()
            else:
                await self._sync_firewall(restoring=True)
        except Exception as e:
            self._log.warn("packet rules check failed: {error}", error=str(e))
        finally:
            self._lock.release()


def _replace_table(table: str, bridges: list[nft.BridgeRules], forwards: list[nft.Forward]) -> bool:
    """
    Replace the table, publishing on [::1] in the kernel where it can
    (blocking); whether it does.
    """
    loopback6 = not netlink.bridged_ipv6_filtered()
    nft.replace_table(table, bridges, forwards, loopback6)
    return loopback6
