"""
Kill points: a failure injected at each step of network set-up and
tear-down (every rtnetlink change, the namespace, the table, the firewall
rules, the database) leaves no device, address, rule, namespace or bound
port behind, and what failed can be done again.
"""

from __future__ import annotations

import errno
import os
import socket
import sqlite3
import subprocess
from typing import Any, Callable

from pyroute2.iproute import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from twisted.internet.defer import fail, inlineCallbacks

from ross.engine.network import firewall, ipam, netlink, nft
from ross.test.integration.test_network import bridge_addresses, free_port_run, free_subnet, published_rules
from ross.testing.containers import ContainerTestCase
from ross.testing.leaks import network_links


class Faults:
    """
    Fails the n-th change made over rtnetlink (link, addr, route), once.

    @ivar hit: the change that failed ("" while none has).
    """

    def __init__(self) -> None:
        self.fail_at = 0
        self.calls = 0
        self.hit = ""

    def arm(self, n: int) -> None:
        self.fail_at, self.calls, self.hit = n, 0, ""

    def tick(self, what: str) -> None:
        self.calls += 1
        if self.calls == self.fail_at:
            self.fail_at = 0
            self.hit = what
            raise NetlinkError(errno.EIO, f"injected fault at {what}")


def failing_iproute(faults: Faults) -> Callable[..., Any]:
    """
    An IPRoute factory whose changes go through C{faults}.
    """

    class FailingIPRoute:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self._ipr = IPRoute(*args, **kwargs)

        def __getattr__(self, name: str) -> Any:
            return getattr(self._ipr, name)

        def __enter__(self) -> FailingIPRoute:
            self._ipr.__enter__()
            return self

        def __exit__(self, *exc: Any) -> Any:
            return self._ipr.__exit__(*exc)

        def link(self, command: str, *args: Any, **kwargs: Any) -> Any:
            faults.tick(f"link {command}")
            return self._ipr.link(command, *args, **kwargs)

        def addr(self, command: str, *args: Any, **kwargs: Any) -> Any:
            faults.tick(f"addr {command}")
            return self._ipr.addr(command, *args, **kwargs)

        def route(self, command: str, *args: Any, **kwargs: Any) -> Any:
            faults.tick(f"route {command}")
            return self._ipr.route(command, *args, **kwargs)

    return FailingIPRoute


def once(f: Callable[..., Any], what: str, deferred: bool = False) -> Callable[..., Any]:
    """
    C{f}, failing on its first call (with C{deferred}, as a function
    returning a Deferred fails: with a failed one).
    """
    calls: list[None] = []

    def failing(*args: Any, **kwargs: Any) -> Any:
        if not calls:
            calls.append(None)
            error = OSError(errno.EIO, f"injected fault at {what}")
            if deferred:
                return fail(error)
            raise error
        return f(*args, **kwargs)

    return failing


def port_free(port: int, family: int = socket.AF_INET) -> bool:
    s = socket.socket(family)
    try:
        s.bind(("0.0.0.0" if family == socket.AF_INET else "::", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def namespace_fds() -> int:
    """
    How many network namespace fds this process holds.
    """
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("net:[")
        except OSError:
            pass
    return count


class KillPointTests(ContainerTestCase):
    timeout = 300

    @inlineCallbacks
    def setUp(self) -> Any:  # type: ignore[override]
        yield super().setUp()
        self.faults = Faults()
        self.patch(netlink, "IPRoute", failing_iproute(self.faults))

    def tearDown(self) -> None:
        # What the daemon logged of the injected faults.
        self.flushLoggedErrors(NetlinkError, OSError)

    def state(self) -> dict[str, Any]:
        """
        What the daemon's networking holds on the host.
        """
        config = self.daemon.network
        links = sorted(n for n in network_links() if n.startswith((config.bridge, config.link_prefix,
                                                                    config.bridge_prefix)))
        table = subprocess.run(["nft", "list", "table", "inet", config.table], capture_output=True, text=True,
                               timeout=30).stdout
        db = sqlite3.connect(self.daemon.root / "networks.db")
        try:
            rows = {table: db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                    for table in ("networks", "endpoints", "addresses6")}
        finally:
            db.close()
        local = subprocess.run(["ip", "-6", "route", "show", "table", "local"], capture_output=True, text=True,
                               timeout=30).stdout
        return {
            "links": links,
            "addresses": {name: bridge_addresses(name) + bridge_addresses(name, 6)
                          for name in links if not name.startswith(config.link_prefix)},
            "loopback routes": sorted(line.split()[3] for line in local.splitlines()
                                      if line.startswith("local ::1 dev ") and line.split()[3] in links),
            "published": published_rules(table),
            "namespace fds": namespace_fds(),
            "endpoints": sorted(self.daemon.engine.network.endpoints),
            "networks": sorted(n.name for n in self.daemon.engine.network.networks.values()),
            "rows": rows,
        }

    @inlineCallbacks
    def back_to(self, baseline: dict[str, Any], what: str) -> Any:
        """
        Wait (bounded) for the state to be C{baseline} again; fail with the
        difference.
        """
        try:
            yield self.wait_for(lambda: self.state() == baseline, 20)
        except Exception:
            self.assertEqual(self.state(), baseline, what)

    @inlineCallbacks
    def test_start(self) -> Any:
        """
        A start of a container on two networks with a published port, with
        each rtnetlink change failing in turn, then the namespace, the
        table, the firewall rules and the endpoints' record: each failed
        start leaves what was there before, the port free, and the
        container starts once nothing fails.
        """
        result = yield self.ross("network", "create", "--subnet", free_subnet(), "app")
        self.assertEqual(result.returncode, 0, result.stderr)
        probe = socket.socket()
        probe.bind(("0.0.0.0", 0))
        port = probe.getsockname()[1]
        probe.close()
        result = yield self.ross("create", "--name", "box", "--network", "app", "-p", f"{port}:80",
                                 "busybox", "sleep", "600")
        self.assertEqual(result.returncode, 0, result.stderr)
        result = yield self.ross("network", "connect", "bridge", "box")
        self.assertEqual(result.returncode, 0, result.stderr)
        baseline = self.state()
        hits = []
        n = 0
        while True:
            n += 1
            self.faults.arm(n)
            result = yield self.ross("start", "box")
            if result.returncode == 0:
                self.assertEqual(self.faults.hit, "")
                self.faults.arm(0)
                break
            self.assertNotEqual(self.faults.hit, "", result.stderr)
            hits.append(self.faults.hit)
            yield self.back_to(baseline, self.faults.hit)
            self.assertTrue(port_free(port), self.faults.hit)
        # The namespace's loopback, then per interface: the veth, its
        # master, the address, the link up inside, the default route.
        self.assertEqual(hits, ["link set"] + ["link add", "link set", "addr add", "link set", "route add"]
                         + ["link add", "link set", "addr add", "link set"])
        result = yield self.ross("stop", "-t", "0", "box")
        self.assertEqual(result.returncode, 0, result.stderr)
        yield self.back_to(baseline, "stop")

        store = self.daemon.engine.network._store
        for module, name in ((netlink, "create_namespace"), (nft, "replace_table"), (firewall, "sync"),
                             (store, "put_endpoints")):
            self.patch(module, name, once(getattr(module, name), name, deferred=module is store))
            result = yield self.ross("start", "box")
            self.assertNotEqual(result.returncode, 0, name)
            yield self.back_to(baseline, name)
            self.assertTrue(port_free(port), name)

    @inlineCallbacks
    def test_ipv6(self) -> Any:
        """
        The same walks with IPv6: a network create with both subnets (its
        bridge's IPv6 address and loopback route too), then a start on it
        and on the default bridge with a port published on both versions
        (the container's IPv6 address and route too): each failure leaves
        what was there before, the port free on both.
        """
        # IPv6 forwarding is the host's: these walks need none.
        self.patch(netlink, "enable_ipv6_forwarding", lambda: False)
        subnet6 = str(ipam.choose_subnet(netlink.routed_networks(), ipam.unique_local_pool(os.urandom(8).hex()), 64))
        baseline = self.state()
        n = 0
        while True:
            n += 1
            self.faults.arm(n)
            result = yield self.ross("network", "create", "--ipv6", "--subnet", subnet6, "--subnet", free_subnet(),
                                     "app")
            if result.returncode == 0:
                self.faults.arm(0)
                break
            self.assertNotEqual(self.faults.hit, "", result.stderr)
            yield self.back_to(baseline, self.faults.hit)
        # The bridge, its IPv4 and IPv6 addresses, up, ::1 routed from it.
        self.assertEqual(n, 6)
        port = free_port_run(1)
        result = yield self.ross("create", "--name", "box", "--network", "app", "-p", f"{port}:80",
                                 "busybox", "sleep", "600")
        self.assertEqual(result.returncode, 0, result.stderr)
        result = yield self.ross("network", "connect", "bridge", "box")
        self.assertEqual(result.returncode, 0, result.stderr)
        baseline = self.state()
        hits = []
        n = 0
        while True:
            n += 1
            self.faults.arm(n)
            result = yield self.ross("start", "box")
            if result.returncode == 0:
                self.faults.arm(0)
                break
            self.assertNotEqual(self.faults.hit, "", result.stderr)
            hits.append(self.faults.hit)
            yield self.back_to(baseline, self.faults.hit)
            self.assertTrue(port_free(port) and port_free(port, socket.AF_INET6), self.faults.hit)
        self.assertEqual(hits, ["link set"] + ["link add", "link set", "addr add", "addr add", "link set", "route add",
                                               "route add"] + ["link add", "link set", "addr add", "link set"])
        self.assertEqual(self.state()["rows"]["addresses6"], 1)
        self.assertFalse(port_free(port, socket.AF_INET6))
        result = yield self.ross("rm", "-f", "box")
        self.assertEqual(result.returncode, 0, result.stderr)
        result = yield self.ross("network", "rm", "app")
        self.assertEqual(result.returncode, 0, result.stderr)

    @inlineCallbacks
    def test_stop_with_stale_rules(self) -> Any:
        """
        A stop whose table update fails still stops; the published port's
        rule goes at the next periodic check.
        """
        result = yield self.ross("create", "--name", "box", "-p", "80", "busybox", "sleep", "600")
        self.assertEqual(result.returncode, 0, result.stderr)
        baseline = self.state()
        result = yield self.ross("start", "box")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(self.state()["published"], 1)
        self.patch(nft, "replace_table", once(nft.replace_table, "replace_table"))
        result = yield self.ross("stop", "-t", "0", "box")
        self.assertEqual(result.returncode, 0, result.stderr)
        yield self.back_to(baseline, "stop")

    @inlineCallbacks
    def test_network_create_and_remove(self) -> Any:
        """
        A network create with each step failing in turn (the bridge's
        rtnetlink changes, its record, the rules) leaves no bridge, record
        or name, and the create works once nothing fails; a removal whose
        bridge deletion fails keeps the network, whole, for another try.
        """
        subnet = free_subnet()
        baseline = self.state()
        n = 0
        while True:
            n += 1
            self.faults.arm(n)
            result = yield self.ross("network", "create", "--subnet", subnet, "app")
            if result.returncode == 0:
                self.assertEqual(self.faults.hit, "")
                self.faults.arm(0)
                break
            self.assertNotEqual(self.faults.hit, "", result.stderr)
            yield self.back_to(baseline, self.faults.hit)
        self.assertEqual(n, 4)
        result = yield self.ross("network", "rm", "app")
        self.assertEqual(result.returncode, 0, result.stderr)
        store = self.daemon.engine.network._store
        for module, name in ((store, "put_network"), (nft, "replace_table"), (firewall, "sync")):
            self.patch(module, name, once(getattr(module, name), name, deferred=module is store))
            result = yield self.ross("network", "create", "--subnet", subnet, "app")
            self.assertNotEqual(result.returncode, 0, name)
            yield self.back_to(baseline, name)

        result = yield self.ross("network", "create", "--subnet", subnet, "app")
        self.assertEqual(result.returncode, 0, result.stderr)
        created = self.state()
        self.faults.arm(1)
        result = yield self.ross("network", "rm", "app")
        self.assertNotEqual(result.returncode, 0)
        self.assertEqual(self.faults.hit, "link del")
        self.assertEqual(self.state(), created)
        result = yield self.ross("network", "rm", "app")
        self.assertEqual(result.returncode, 0, result.stderr)
        yield self.back_to(baseline, "network rm")

    @inlineCallbacks
    def test_live_port(self) -> Any:
        """
        A port added to a running container whose rules or record cannot be
        written is not published: no rule, the port free, the container's
        ports as they were.
        """
        result = yield self.ross("run", "-d", "--name", "box", "busybox", "sleep", "600")
        self.assertEqual(result.returncode, 0, result.stderr)
        baseline = self.state()
        probe = socket.socket()
        probe.bind(("0.0.0.0", 0))
        port = probe.getsockname()[1]
        probe.close()
        store = self.daemon.engine.network._store
        for module, name in ((nft, "replace_table"), (firewall, "sync"), (store, "replace_endpoint")):
            self.patch(module, name, once(getattr(module, name), name, deferred=module is store))
            result = yield self.ross("port", "add", "box", f"{port}:80")
            self.assertNotEqual(result.returncode, 0, name)
            yield self.back_to(baseline, name)
            self.assertTrue(port_free(port), name)
            result = yield self.ross("port", "box")
            self.assertEqual(result.stdout, b"", name)
