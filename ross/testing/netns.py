"""
A private host for network tests: a network namespace standing for a
machine of its own, whose firewall a test may set as dockerd, firewalld or
an administrator would without touching the real host, wired by a veth pair
to a second namespace standing for the outside world.

    host = PrivateHost()
    host.create()                        # blocking
    host.run("iptables", "-P", "FORWARD", "DROP")
    host.run("busybox", "wget", ..., where="remote")
    host.destroy()

Everything lives in the two namespaces: destroying them (after the
processes in them are gone) leaves nothing.
"""

from __future__ import annotations

import os
import signal
import subprocess
from typing import Literal

Where = Literal["host", "remote"]


class PrivateHost:
    """
    @ivar address: the host's address on its link to the outside.
    @ivar remote_address: the outside's address, the host's default gateway.
    @ivar address6, remote_address6: the same in IPv6.
    """

    address = "203.0.113.1"
    remote_address = "203.0.113.2"
    address6 = "2001:db8:1::1"
    remote_address6 = "2001:db8:1::2"
    uplink = "up0"

    def __init__(self) -> None:
        tag = os.urandom(3).hex()
        self.name = f"rossh{tag}"
        self.remote = f"rossr{tag}"

    def create(self) -> None:
        """
        Make both namespaces: the link between them addressed (IPv4 and
        IPv6) and up, the host's default routes through the outside, IPv4
        forwarding on and br_netfilter passing bridged traffic to iptables
        and ip6tables, as dockerd leaves a host (blocking).
        """
        for name in (self.name, self.remote):
            _ip("netns", "add", name)
            _ip("-n", name, "link", "set", "lo", "up")
        _ip("-n", self.name, "link", "add", self.uplink, "type", "veth", "peer", "name", "up1",
            "netns", self.remote)
        _ip("-n", self.name, "addr", "add", f"{self.address}/24", "dev", self.uplink)
        _ip("-n", self.remote, "addr", "add", f"{self.remote_address}/24", "dev", "up1")
        _ip("-n", self.name, "addr", "add", f"{self.address6}/64", "dev", self.uplink, "nodad")
        _ip("-n", self.remote, "addr", "add", f"{self.remote_address6}/64", "dev", "up1", "nodad")
        _ip("-n", self.name, "link", "set", self.uplink, "up")
        _ip("-n", self.remote, "link", "set", "up1", "up")
        _ip("-n", self.name, "route", "add", "default", "via", self.remote_address)
        _ip("-n", self.name, "-6", "route", "add", "default", "via", self.remote_address6)
        self.bridge_filtering(True)
        self.run("sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward")

    def bridge_filtering(self, on: bool) -> None:
        """
        Whether br_netfilter hands bridged IPv4 and IPv6 to iptables here
        (dockerd's way), or neither (a bare host's).
        """
        for key in ("bridge-nf-call-iptables", "bridge-nf-call-ip6tables"):
            self.run("sh", "-c", f"echo {int(on)} > /proc/sys/net/bridge/{key}")

    def command(self, *argv: str, where: Where = "host") -> list[str]:
        """
        C{argv} run in the host's (or the outside's) network namespace.
        """
        return ["nsenter", f"--net=/run/netns/{self.name if where == 'host' else self.remote}", *argv]

    def run(self, *argv: str, where: Where = "host", timeout: float = 30,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        """
        Run C{argv} in a namespace (blocking, bounded by C{timeout}).
        """
        return subprocess.run(self.command(*argv, where=where), capture_output=True, text=True,
                              timeout=timeout, check=check)

    def link(self, bridge: str, name: str, address: str, gateway: str) -> None:
        """
        A third namespace C{name} on a bridge C{bridge} of the host (made if
        need be; C{gateway}/24 on it), with C{address}/24: a container of
        another manager's.
        """
        if subprocess.run(self.command("ip", "link", "show", bridge), capture_output=True,
                          timeout=30).returncode != 0:
            _ip("-n", self.name, "link", "add", bridge, "type", "bridge")
            _ip("-n", self.name, "addr", "add", f"{gateway}/24", "dev", bridge)
            _ip("-n", self.name, "link", "set", bridge, "up")
        _ip("netns", "add", name)
        peer = f"v{name[-8:]}"
        _ip("-n", self.name, "link", "add", peer, "type", "veth", "peer", "name", "eth0", "netns", name)
        _ip("-n", self.name, "link", "set", peer, "master", bridge, "up")
        _ip("-n", name, "addr", "add", f"{address}/24", "dev", "eth0")
        _ip("-n", name, "link", "set", "eth0", "up")
        _ip("-n", name, "link", "set", "lo", "up")
        _ip("-n", name, "route", "add", "default", "via", gateway)

    def destroy(self, *others: str) -> None:
        """
        Kill what runs in the namespaces (and in C{others}) and delete them.
        """
        for name in (self.name, self.remote, *others):
            pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True,
                                  timeout=30).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)
