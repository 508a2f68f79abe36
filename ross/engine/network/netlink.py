# -*- test-case-name: ross.test.integration.test_network -*-
"""
The kernel side of container networking over rtnetlink (pyroute2): bridges,
veth pairs, addresses and routes. A flat module of small blocking functions,
as neutron's privileged ip_lib: callers run them in a thread, never on the
reactor. Creation and deletion are idempotent; netlink errors become the
engine's errors.

A container's namespace is made and configured without forking (pyroute2's
netns helpers fork, which a process serving gRPC must not): a thread
enters a new namespace (unshare) or an existing one (setns) for the two
system calls that open an fd of it and an rtnetlink socket there, and
leaves at once; the veth peer is created straight inside (C{net_ns_fd})
and configured through that socket. A socket stays in the namespace it was
created in, whatever thread uses it.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import socket
import threading
from typing import Any, Iterator

import attrs
from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ross.engine.runtime import linux
from ross.errors import FailedPrecondition, NotFound

# NETLINK_ROUTE, the rtnetlink protocol number.
_NETLINK_ROUTE = 0

# setns(2) changes only the calling thread, but a thread left in a
# container's namespace would configure the wrong host: one at a time, and
# always back before anything else runs on the thread.
_setns_lock = threading.Lock()


@attrs.frozen
class Interface:
    """
    A container's interface as L{plug} configures it.

    @ivar host_name: the veth end left on the host, attached to C{bridge}.
    @ivar name: its peer's name in the container ("eth0").
    """

    host_name: str
    name: str
    bridge: str
    address: str
    prefixlen: int
    gateway: str
    mac: str
    mtu: int
    default_route: bool = True


def _ipr() -> Any:
    return IPRoute()


def _index(ipr: Any, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return int(found[0]) if found else None


def bridge_address(name: str) -> ipaddress.IPv4Interface | None:
    """
    The (first) IPv4 address of link C{name}, None when it does not exist
    or has none.
    """
    with _ipr() as ipr:
        index = _index(ipr, name)
        if index is None:
            return None
        for a in ipr.get_addr(index=index, family=socket.AF_INET):
            return ipaddress.IPv4Interface(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}")
    return None


def ensure_bridge(name: str, gateway: str, prefixlen: int) -> int:
    """
    Make bridge C{name} exist, up, holding C{gateway}/C{prefixlen} and no
    other IPv4 address (one left by an earlier subnet is replaced, as
    dockerd does for docker0), with route_localnet on (published ports
    reach containers from 127.0.0.1 through DNAT, see
    L{ross.engine.network.nft}). Returns its MTU.
    """
    with _ipr() as ipr:
        index = _index(ipr, name)
        if index is None:
            try:
                ipr.link("add", ifname=name, kind="bridge")
            except NetlinkError as e:
                if e.code != errno.EEXIST:
                    raise
            index = _index(ipr, name)
            if index is None:
                raise FailedPrecondition(f"bridge {name} vanished while it was created")
        have = {(a.get_attr("IFA_ADDRESS"), a["prefixlen"]) for a in ipr.get_addr(index=index, family=socket.AF_INET)}
        for address, length in have - {(gateway, prefixlen)}:
            try:
                ipr.addr("del", index=index, address=address, prefixlen=length)
            except NetlinkError as e:
                if e.code != errno.EADDRNOTAVAIL:
                    raise
        if (gateway, prefixlen) not in have:
            try:
                ipr.addr("add", index=index, address=gateway, prefixlen=prefixlen)
            except NetlinkError as e:
                if e.code != errno.EEXIST:
                    raise
        ipr.link("set", index=index, state="up")
        mtu = int(ipr.get_links(index)[0].get_attr("IFLA_MTU"))
    _sysctl(f"net/ipv4/conf/{name}/route_localnet", "1")
    return mtu


def _sysctl(key: str, value: str) -> None:
    with open(f"/proc/sys/{key}", "w") as f:
        f.write(value)


def delete_link(name: str) -> bool:
    """
    Delete link C{name} (a bridge, a veth and its peer); False when there
    was none.
    """
    with _ipr() as ipr:
        index = _index(ipr, name)
        if index is None:
            return False
        try:
            ipr.link("del", index=index)
        except NetlinkError as e:
            if e.code in (errno.ENODEV, errno.ENOENT):
                return False
            raise
    return True


def exists(name: str) -> bool:
    """
    Whether link C{name} exists in this thread's network namespace (one
    ioctl: cheap enough for the reactor thread).
    """
    try:
        socket.if_nametoindex(name)
    except OSError:
        return False
    return True


def links() -> dict[str, str]:
    """
    Every link of the host's namespace: name -> name of its master ("" for
    none).
    """
    with _ipr() as ipr:
        found = [(int(link["index"]), link.get_attr("IFLA_IFNAME"), link.get_attr("IFLA_MASTER"))
                 for link in ipr.get_links()]
    names = {index: name for index, name, _ in found}
    return {name: names.get(master, "") if master else "" for _, name, master in found}


def bridges_and_uplinks() -> tuple[set[str], set[str]]:
    """
    The names of the host's bridges, and of the links its IPv4 default
    routes leave by (blocking).
    """
    with _ipr() as ipr:
        names = {}
        bridges = set()
        for link in ipr.get_links():
            name = link.get_attr("IFLA_IFNAME")
            names[int(link["index"])] = name
            info = link.get_attr("IFLA_LINKINFO")
            if info is not None and info.get_attr("IFLA_INFO_KIND") == "bridge":
                bridges.add(name)
        uplinks = {names.get(r.get_attr("RTA_OIF"), "") for r in ipr.get_routes(family=socket.AF_INET, table=254)
                   if r["dst_len"] == 0}
    return bridges, uplinks - {""}


def routed_networks() -> list[ipaddress.IPv4Network]:
    """
    The IPv4 destinations the host routes (main table), to choose a subnet
    that collides with none.
    """
    with _ipr() as ipr:
        routes = ipr.get_routes(family=socket.AF_INET, table=254)
        nets = []
        for r in routes:
            dst = r.get_attr("RTA_DST")
            if dst is not None:
                nets.append(ipaddress.IPv4Network(f"{dst}/{r['dst_len']}", strict=False))
        for a in ipr.get_addr(family=socket.AF_INET):
            nets.append(ipaddress.IPv4Network(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}", strict=False))
    return nets


def open_namespace(pid: int) -> int:
    """
    An fd (close-on-exec) of the network namespace of process C{pid}.
    """
    try:
        return os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NotFound(f"process {pid} is gone: its network namespace cannot be configured") from None


def _entered(target: int | None) -> tuple[int, socket.socket]:
    """
    Enter network namespace C{target} (None: a new one) for the time of two
    system calls: an fd of it and an rtnetlink socket there.
    """
    with _setns_lock:
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            if target is None:
                linux.unshare(linux.CLONE_NEWNET)
            else:
                linux.setns(target, linux.CLONE_NEWNET)
            try:
                fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
                return fd, socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_ROUTE)
            finally:
                # Not coming back would leave this pool thread
                # configuring a container as if it were the host.
                try:
                    linux.setns(home, linux.CLONE_NEWNET)
                except OSError:
                    os.abort()
        finally:
            os.close(home)


@contextlib.contextmanager
def _inside(namespace: int) -> Iterator[Any]:
    fd, sock = _entered(namespace)
    os.close(fd)
    ipr = IPRoute(fileno=sock.detach())
    try:
        yield ipr
    finally:
        ipr.close()


def create_namespace() -> int:
    """
    A new network namespace with its loopback up, made without forking (the
    calling thread enters it for two system calls): an fd of it,
    close-on-exec. The namespace lives while the fd is open or a process
    is in it.
    """
    fd, sock = _entered(None)
    try:
        with IPRoute(fileno=sock.detach()) as ipr:
            ipr.link("set", index=1, state="up")
    except BaseException:
        os.close(fd)
        raise
    return fd


def plug(interface: Interface, namespace: int) -> None:
    """
    Give the network namespace of fd C{namespace} the interface
    C{interface}: a veth pair whose host end joins the bridge and whose
    other end is created inside, addressed, up, with the default route via
    the gateway. Undone (the pair deleted) when any step fails.
    """
    i = interface
    with _ipr() as ipr:
        bridge = _index(ipr, i.bridge)
        if bridge is None:
            raise NotFound(f"bridge {i.bridge} does not exist")
        try:
            ipr.link("add", ifname=i.host_name, kind="veth", mtu=i.mtu,
                     peer={"ifname": i.name, "net_ns_fd": namespace, "address": i.mac, "mtu": i.mtu})
        except NetlinkError as e:
            if e.code == errno.EEXIST:
                raise FailedPrecondition(f"network interface {i.host_name} already exists") from None
            raise
        try:
            host = _index(ipr, i.host_name)
            if host is None:
                raise NotFound(f"veth {i.host_name} vanished while it was created")
            ipr.link("set", index=host, master=bridge, state="up")
            with _inside(namespace) as ipr_in:
                inner = _index(ipr_in, i.name)
                if inner is None:
                    raise NotFound(f"interface {i.name} did not appear in the container")
                ipr_in.addr("add", index=inner, address=i.address, prefixlen=i.prefixlen)
                ipr_in.link("set", index=inner, state="up")
                if i.default_route:
                    ipr_in.route("add", dst="0.0.0.0/0", gateway=i.gateway)
        except BaseException:
            try:
                ipr.link("del", ifname=i.host_name)
            except NetlinkError:
                pass
            raise
