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
import importlib.util
import ipaddress
import os
import socket
import struct
import sys
import threading
from typing import Any, Iterator

import attrs

from ross.engine.runtime import linux
from ross.errors import FailedPrecondition, NotFound


def _rtnetlink_only() -> None:
    """
    Register pyroute2's package without running its C{__init__}, which
    imports every netlink family pyroute2 knows (wireless, IPVS, devlink,
    plan9, ...): 163 modules, 60 ms of the daemon's start and 5 MiB it
    keeps, for a daemon that speaks rtnetlink only. Its submodules import
    what they use themselves, so C{pyroute2.iproute} and the modules below
    load as usual. (Import pyroute2's names from their submodules, never
    from the package.)
    """
    if "pyroute2" in sys.modules:
        return
    spec = importlib.util.find_spec("pyroute2")
    if spec is not None:
        sys.modules["pyroute2"] = importlib.util.module_from_spec(spec)


_rtnetlink_only()

from pyroute2.iproute import IPRoute  # noqa: E402 (after the registration above)
from pyroute2.netlink.exceptions import NetlinkError  # noqa: E402
from pyroute2.netlink.rtnl.ifaddrmsg import IFA_F_NODAD  # noqa: E402

# NETLINK_ROUTE, the rtnetlink protocol number.
_NETLINK_ROUTE = 0
# The kernel's local routing table, where ::1 lives.
_LOCAL_TABLE = 255

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
    @ivar address6: its IPv6 address (empty: none), with C{prefixlen6}
        and C{gateway6}.
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
    address6: str = ""
    prefixlen6: int = 0
    gateway6: str = ""


def _ipr() -> Any:
    return IPRoute()


def _index(ipr: Any, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return int(found[0]) if found else None


def _addresses(ipr: Any, index: int, family: int) -> set[tuple[str, int]]:
    """
    The addresses of link C{index} in C{family}, but IPv6 link-local ones
    (the kernel's own).
    """
    found = {(ipaddress.ip_address(a.get_attr("IFA_ADDRESS")).compressed, int(a["prefixlen"]))
             for a in ipr.get_addr(index=index, family=family)}
    return {(address, length) for address, length in found if not ipaddress.ip_address(address).is_link_local}


def bridge_address(name: str, family: int = socket.AF_INET) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface | None:
    """
    The (first) address in C{family} of link C{name} (IPv6: not
    link-local), None when it does not exist or has none.
    """
    with _ipr() as ipr:
        index = _index(ipr, name)
        if index is None:
            return None
        for address, length in sorted(_addresses(ipr, index, family)):
            return ipaddress.ip_interface(f"{address}/{length}")
    return None


def ensure_bridge(name: str, gateway: str, prefixlen: int, gateway6: str = "", prefixlen6: int = 0) -> int:
    """
    Make bridge C{name} exist, up, holding C{gateway}/C{prefixlen} and no
    other IPv4 address (one left by an earlier subnet is replaced, as
    dockerd does for docker0), with route_localnet on (published ports
    reach containers from 127.0.0.1 through DNAT, see
    L{ross.engine.network.nft}); the same for C{gateway6}/C{prefixlen6}
    (empty: no IPv6 address but link-local), with ::1 routed locally from
    it (L{_loopback_from}). Returns its MTU.
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
        _keep_address(ipr, index, socket.AF_INET, (gateway, prefixlen))
        if gateway6:
            _sysctl(f"net/ipv6/conf/{name}/disable_ipv6", "0")
        _keep_address(ipr, index, socket.AF_INET6,
                      (ipaddress.ip_address(gateway6).compressed, prefixlen6) if gateway6 else None)
        ipr.link("set", index=index, state="up")
        _loopback_from(ipr, index, bool(gateway6))
        mtu = int(ipr.get_links(index)[0].get_attr("IFLA_MTU"))
    _sysctl(f"net/ipv4/conf/{name}/route_localnet", "1")
    return mtu


def _keep_address(ipr: Any, index: int, family: int, wanted: tuple[str, int] | None) -> None:
    """
    Make C{wanted} the only address of link C{index} in C{family} (IPv6:
    besides link-local ones); None: no address.
    """
    have = _addresses(ipr, index, family)
    for address, length in have - {wanted}:
        try:
            ipr.addr("del", index=index, address=address, prefixlen=length)
        except NetlinkError as e:
            if e.code != errno.EADDRNOTAVAIL:
                raise
    if wanted is not None and wanted not in have:
        _add_address(ipr, index, *wanted)


def _add_address(ipr: Any, index: int, address: str, prefixlen: int) -> None:
    """
    Add an address, an existing one fine. IPv6 ones skip duplicate address
    detection, as docker's: they are Ross's to give, and a tentative
    address cannot be used (a container's first connection, the DNS
    server's bind) for a second or more.
    """
    extra = {"flags": IFA_F_NODAD} if ":" in address else {}
    try:
        ipr.addr("add", index=index, address=address, prefixlen=prefixlen, **extra)
    except NetlinkError as e:
        if e.code != errno.EEXIST:
            raise


def _loopback_from(ipr: Any, index: int, wanted: bool) -> None:
    """
    Route ::1 locally for packets that come in by link C{index} (or not).

    Published ports answer on [::1] through DNAT too, and their answers
    come back from the bridge with ::1 as destination once conntrack has
    undone the masquerade. IPv6 has no route_localnet: the kernel looks
    ::1 up strictly on the incoming interface, finds it only on lo, and
    drops them. This route is that lookup's answer for the bridge. Packets
    that arrive addressed to ::1 are still dropped before any of this
    (RFC 4291: the kernel refuses them on any link but lo), so nothing a
    container sends reaches the host's loopback by it.
    """
    route = {"dst": "::1/128", "oif": index, "table": _LOCAL_TABLE, "type": "local", "family": socket.AF_INET6}
    have = [r for r in ipr.get_routes(family=socket.AF_INET6, table=_LOCAL_TABLE, oif=index)
            if r.get_attr("RTA_DST") == "::1" and r["dst_len"] == 128]
    try:
        if wanted and not have:
            ipr.route("add", **route)
        elif not wanted and have:
            ipr.route("del", **route)
    except NetlinkError as e:
        if e.code not in (errno.EEXIST, errno.ESRCH):
            raise


def _sysctl(key: str, value: str) -> None:
    with open(f"/proc/sys/{key}", "w") as f:
        f.write(value)


def _read_sysctl(key: str) -> str | None:
    try:
        with open(f"/proc/sys/{key}") as f:
            return f.read().strip()
    except OSError:
        return None


def enable_ipv6_forwarding() -> bool:
    """
    Turn IPv6 forwarding on, as dockerd does for its IPv6 networks
    (blocking); whether it was off.
    """
    if _read_sysctl("net/ipv6/conf/all/forwarding") == "1":
        return False
    _sysctl("net/ipv6/conf/default/forwarding", "1")
    _sysctl("net/ipv6/conf/all/forwarding", "1")
    return True


def bridged_ipv6_filtered() -> bool:
    """
    Whether br_netfilter hands IPv6 bridged traffic to netfilter here
    (dockerd loads it): then conntrack undoes NAT already at the bridge,
    before the kernel's own checks refuse ::1 on any link but lo.
    """
    return _read_sysctl("net/bridge/bridge-nf-call-ip6tables") == "1"


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
        oifs = {r.get_attr("RTA_OIF") for r in ipr.get_routes(family=socket.AF_INET, table=254) if r["dst_len"] == 0}
    uplinks = set()
    for index in oifs - {None}:
        try:
            uplinks.add(socket.if_indextoname(index))
        except OSError:
            # Gone since the dump.
            continue
    return _bridges(), uplinks


# rtnetlink's numbers (linux/rtnetlink.h, linux/if_link.h, linux/netlink.h).
_RTM_NEWLINK, _RTM_GETLINK = 16, 18
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_NLM_F_REQUEST, _NLM_F_DUMP = 0x1, 0x300
_IFLA_IFNAME, _IFLA_LINKINFO, _IFLA_INFO_KIND = 3, 18, 1
_NLA_F_NESTED = 0x8000


def _attribute(kind: int, payload: bytes) -> bytes:
    data = struct.pack("HH", 4 + len(payload), kind) + payload
    return data + b"\0" * (-len(data) % 4)


def _bridges() -> set[str]:
    """
    The names of the host's bridges, from a link dump the kernel filters
    by kind (blocking). pyroute2 filters a dump itself, after parsing every
    link: with 500 containers' veths, a third of a second each time the
    firewall is looked at (every few seconds).
    """
    request = struct.pack("BxHiII", socket.AF_UNSPEC, 0, 0, 0, 0) + _attribute(
        _IFLA_LINKINFO | _NLA_F_NESTED, _attribute(_IFLA_INFO_KIND, b"bridge"))
    names: set[str] = set()
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE) as sock:
        sock.settimeout(10)
        sock.sendto(struct.pack("IHHII", 16 + len(request), _RTM_GETLINK, _NLM_F_REQUEST | _NLM_F_DUMP, 1, 0)
                    + request, (0, 0))
        while True:
            data = sock.recv(1 << 16)
            offset = 0
            while offset + 16 <= len(data):
                length, kind = struct.unpack_from("IH", data, offset)
                if length < 16:
                    raise OSError(errno.EPROTO, "a malformed netlink message")
                if kind == _NLMSG_DONE:
                    return names
                if kind == _NLMSG_ERROR:
                    code = -struct.unpack_from("i", data, offset + 16)[0]
                    raise OSError(code, os.strerror(code))
                if kind == _RTM_NEWLINK:
                    at, end = offset + 32, offset + length
                    while at + 4 <= end:
                        size, attr = struct.unpack_from("HH", data, at)
                        if size < 4:
                            break
                        if attr == _IFLA_IFNAME:
                            names.add(os.fsdecode(data[at + 4:at + size].rstrip(b"\0")))
                        at += (size + 3) & ~3
                offset += (length + 3) & ~3


def routed_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """
    The IPv4 and IPv6 destinations the host routes (main table) and its
    addresses' subnets, to choose a subnet that collides with none.
    """
    nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    with _ipr() as ipr:
        for family in (socket.AF_INET, socket.AF_INET6):
            for r in ipr.get_routes(family=family, table=254):
                dst = r.get_attr("RTA_DST")
                if dst is not None:
                    nets.append(ipaddress.ip_network(f"{dst}/{r['dst_len']}", strict=False))
            for a in ipr.get_addr(family=family):
                nets.append(ipaddress.ip_network(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}", strict=False))
    return [n for n in nets if not n.is_link_local and not n.is_multicast]


def open_namespace(pid: int) -> int:
    """
    An fd (close-on-exec) of the network namespace of process C{pid}.
    """
    try:
        return os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NotFound(f"process {pid} is gone: its network namespace cannot be configured") from None


@contextlib.contextmanager
def _visiting(target: int | None) -> Iterator[None]:
    """
    Have the calling thread in network namespace C{target} (None: a new
    one) for the time of the block: for the calls that bind to the
    namespace they are made in (making a socket, opening a sysctl), and
    nothing else.
    """
    with _setns_lock:
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            if target is None:
                linux.unshare(linux.CLONE_NEWNET)
            else:
                linux.setns(target, linux.CLONE_NEWNET)
            try:
                yield
            finally:
                # Not coming back would leave this pool thread
                # configuring a container as if it were the host.
                try:
                    linux.setns(home, linux.CLONE_NEWNET)
                except OSError:
                    os.abort()
        finally:
            os.close(home)


def _entered(target: int | None) -> tuple[int, socket.socket]:
    """
    An fd of network namespace C{target} (None: a new one) and an
    rtnetlink socket there.
    """
    with _visiting(target):
        fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            return fd, socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_ROUTE)
        except BaseException:
            os.close(fd)
            raise


def _disable_ipv6(name: str, namespace: int | None = None) -> None:
    """
    Turn IPv6 off on link C{name} of network namespace C{namespace} (None:
    the host's; a kernel without IPv6: nothing to do).
    """
    key = f"net/ipv6/conf/{name}/disable_ipv6"
    try:
        if namespace is None:
            _sysctl(key, "1")
        else:
            with _visiting(namespace):
                _sysctl(key, "1")
    except FileNotFoundError:
        pass


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
            # A bridge port needs no IPv6 of its own (the bridge has the
            # gateway's): without it no link-local route per container,
            # which the kernel adds next to all the others', and no
            # duplicate address detection or MLD sent to the container.
            _disable_ipv6(i.host_name)
            ipr.link("set", index=host, master=bridge, state="up")
            # Hairpin: a frame may leave by the port it came in. A container
            # reaching its own published port (its host address, DNATed back
            # to itself) needs it where br_netfilter applies that DNAT on
            # the bridge, which then sends the frame back where it came from
            # (docker's hairpin mode, kubenet's hairpin-veth).
            ipr.brport("set", index=host, mode=1)
            with _inside(namespace) as ipr_in:
                inner = _index(ipr_in, i.name)
                if inner is None:
                    raise NotFound(f"interface {i.name} did not appear in the container")
                ipr_in.addr("add", index=inner, address=i.address, prefixlen=i.prefixlen)
                if i.address6:
                    _add_address(ipr_in, inner, i.address6, i.prefixlen6)
                else:
                    # Off before the link is up, as docker's on a network
                    # without IPv6 (lo keeps ::1): otherwise the link's
                    # duplicate address detection, MLD reports and router
                    # solicitations go to every container on the bridge,
                    # so each start would cost every running container.
                    # The container's own sysctls come later (see
                    # container.run_init) and may turn it on again.
                    _disable_ipv6(i.name, namespace)
                ipr_in.link("set", index=inner, state="up")
                if i.default_route:
                    ipr_in.route("add", dst="0.0.0.0/0", gateway=i.gateway)
                    if i.address6:
                        ipr_in.route("add", dst="::/0", gateway=i.gateway6, family=socket.AF_INET6)
        except BaseException as e:
            try:
                ipr.link("del", ifname=i.host_name)
            except NetlinkError:
                pass
            if isinstance(e, NetlinkError) and e.code == errno.ENODEV:
                # A link went while it was set up: the container's namespace
                # with its end (the container ended, killed as it started).
                raise FailedPrecondition(f"interface {i.name} vanished as it was set up: the container "
                                         "is not running") from None
            raise
