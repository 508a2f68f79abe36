"""
Container networking for real: the default bridge, addresses, NAT,
published ports, clean-up, against an in-process daemon with a bridge,
subnet and nftables table of its own.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import select
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import attrs
import grpc
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from ross.engine.network import ipam, netlink, nft
from ross.engine.network.claims import claim
from ross.engine.network.ports import port_mappings
from ross.engine.network.store import PortMapping
from ross.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from ross.testing.containers import ContainerTestCase
from ross.testing.daemon import DaemonProcess, InProcessDaemon, test_network
from ross.testing.images import docker_archive
from ross.testing.probes import compile_probe
from ross.v1 import container_pb2

HTTPD = "echo hello > /index.html && exec httpd -f -p 80 -h /"

# rawudp IFNAME DST_MAC DST_IP PORT PAYLOAD: one UDP datagram from IFNAME's
# address, made by hand and sent as an Ethernet frame to DST_MAC, so that
# the sender's routing (127.0.0.0/8 is its own loopback) has no say: the
# packet of CVE-2020-8558.
RAW_UDP = r"""
#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <netinet/ip.h>
#include <netinet/udp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

static unsigned short checksum(const unsigned short *words, int len) {
    unsigned long sum = 0;
    for (; len > 1; len -= 2) sum += *words++;
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    return (unsigned short)~sum;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: rawudp IFNAME DST_MAC DST_IP PORT PAYLOAD\n");
        return 2;
    }
    int s = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_IP));
    if (s < 0) { perror("socket"); return 1; }
    struct ifreq hw = {0}, in = {0};
    strncpy(hw.ifr_name, argv[1], IFNAMSIZ - 1);
    strncpy(in.ifr_name, argv[1], IFNAMSIZ - 1);
    if (ioctl(s, SIOCGIFHWADDR, &hw) < 0 || ioctl(s, SIOCGIFADDR, &in) < 0) { perror("ioctl"); return 1; }
    unsigned char dst[6];
    if (sscanf(argv[2], "%hhx:%hhx:%hhx:%hhx:%hhx:%hhx", dst, dst + 1, dst + 2, dst + 3, dst + 4, dst + 5) != 6) {
        fprintf(stderr, "bad MAC %s\n", argv[2]);
        return 2;
    }
    size_t payload = strlen(argv[5]);
    unsigned char frame[1500] = {0};
    if (payload > sizeof frame - 42) return 2;
    struct ether_header *eth = (struct ether_header *)frame;
    struct iphdr *ip = (struct iphdr *)(frame + 14);
    struct udphdr *udp = (struct udphdr *)(frame + 34);
    memcpy(eth->ether_dhost, dst, 6);
    memcpy(eth->ether_shost, hw.ifr_hwaddr.sa_data, 6);
    eth->ether_type = htons(ETH_P_IP);
    ip->version = 4;
    ip->ihl = 5;
    ip->ttl = 64;
    ip->protocol = IPPROTO_UDP;
    ip->tot_len = htons(28 + payload);
    ip->saddr = ((struct sockaddr_in *)&in.ifr_addr)->sin_addr.s_addr;
    if (inet_pton(AF_INET, argv[3], &ip->daddr) != 1) { fprintf(stderr, "bad address %s\n", argv[3]); return 2; }
    ip->check = checksum((unsigned short *)ip, 20);
    udp->source = htons(40000);
    udp->dest = htons(atoi(argv[4]));
    udp->len = htons(8 + payload);
    memcpy(frame + 42, argv[5], payload);
    struct sockaddr_ll to = {0};
    to.sll_family = AF_PACKET;
    to.sll_protocol = htons(ETH_P_IP);
    to.sll_ifindex = if_nametoindex(argv[1]);
    to.sll_halen = 6;
    memcpy(to.sll_addr, dst, 6);
    if (sendto(s, frame, 42 + payload, 0, (struct sockaddr *)&to, sizeof to) < 0) { perror("sendto"); return 1; }
    return 0;
}
"""


def published_rules(table: str) -> int:
    """
    How many published ports (DNAT rules) a listing of Ross's table holds.
    """
    return len(re.findall(r"dnat ip6? to", table))


def host_address() -> str:
    """
    An address of this host that is not loopback and not on a bridge of
    Ross's: the source of the default route.
    """
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("192.0.2.254", 9))
        return str(s.getsockname()[0])
    finally:
        s.close()


def http_get(address: str, port: int, path: str = "/index.html", seconds: float = 20) -> bytes:
    """
    The body of GET C{path} from C{address}:C{port} over plain sockets
    (blocking), retrying while the server starts, for C{seconds} at most.
    """
    last: Exception | None = None
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((address, port), timeout=min(5, seconds)) as s:
                s.sendall(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
            if data:
                return data.split(b"\r\n\r\n", 1)[-1]
        except OSError as e:
            last = e
        time.sleep(0.05)
    raise AssertionError(f"no answer from {address}:{port}: {last}")


def free_port_run(n: int) -> int:
    """
    The first of C{n} consecutive ports free on every address (for now).
    """
    for _ in range(100):
        probe = socket.socket()
        probe.bind(("0.0.0.0", 0))
        first = probe.getsockname()[1]
        probe.close()
        if first + n > 65535:
            continue
        held = []
        try:
            for port in range(first, first + n):
                s = socket.socket()
                held.append(s)
                s.bind(("0.0.0.0", port))
            return int(first)
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
    raise AssertionError(f"no {n} consecutive free ports")


def receive(sock: socket.socket, timeout: float) -> bytes | None:
    """
    The next datagram on C{sock}, or None when none comes within
    C{timeout} seconds (blocking).
    """
    ready, _, _ = select.select([sock], [], [], timeout)
    return sock.recv(65536) if ready else None


class DefaultNetworkTests(ContainerTestCase):
    def inspect(self, name: str) -> Any:
        def call() -> Any:
            return self.api.containers.InspectContainer(
                container_pb2.InspectContainerRequest(container_id=name)).container
        return deferToThread(call)

    @inlineCallbacks
    def test_address_routes_and_files(self) -> Any:
        """
        A container on the default network has an address of its subnet on
        eth0, MAC 02:42 + address, a default route via the bridge, its
        address and name in /etc/hosts; inspect shows them as docker does.
        IPv6 is off on eth0 (the network has none; unless the container's
        sysctls turn it on) and on the bridge port, not on lo: ::1 answers.
        """
        network = self.daemon.network
        result = yield self.ross("run", "-d", "--name", "n1", "-h", "box1", "busybox", "sleep", "600")
        self.assertEqual(result.returncode, 0, result.stderr)
        c = yield self.inspect("n1")
        endpoint = c.network_settings.networks["bridge"]
        address = ipaddress.IPv4Address(endpoint.ip_address)
        self.assertIn(address, ipaddress.IPv4Network(network.subnet))
        self.assertEqual(endpoint.gateway, str(ipaddress.IPv4Network(network.subnet).network_address + 1))
        self.assertEqual(endpoint.mac_address, ipam.mac_of(address))
        result = yield self.ross("exec", "n1", "sh", "-c", "ip -o -4 addr show eth0; ip route; cat /etc/hosts")
        self.assertEqual(result.returncode, 0, result.stderr)
        out = result.stdout.decode()
        self.assertIn(f"inet {address}/{endpoint.prefix_len}", out)
        self.assertIn(f"default via {endpoint.gateway} dev eth0", out)
        self.assertIn(f"{address}\tbox1\n", out)
        result = yield self.ross("exec", "n1", "sh", "-c", "cat /proc/sys/net/ipv6/conf/eth0/disable_ipv6 "
                                 "/proc/sys/net/ipv6/conf/lo/disable_ipv6; ip -6 -o addr; ping -c 1 -W 5 ::1")
        self.assertEqual(result.returncode, 0, result.stderr)
        lines = result.stdout.decode().splitlines()
        self.assertEqual(lines[:2], ["1", "0"])
        self.assertEqual([line.split()[1:4] for line in lines if "inet6" in line], [["lo", "inet6", "::1/128"]])
        # Unless the container's own sysctls turn it on.
        result = yield self.ross("run", "--rm", "--sysctl", "net.ipv6.conf.all.disable_ipv6=0", "busybox",
                                 "cat", "/proc/sys/net/ipv6/conf/eth0/disable_ipv6")
        self.assertEqual((result.returncode, result.stdout), (0, b"0\n"), result.stderr)
        result = yield self.ross("inspect", "n1")
        settings = json.loads(result.stdout)[0]["NetworkSettings"]
        self.assertEqual(settings["IPAddress"], str(address))
        self.assertEqual(settings["Gateway"], endpoint.gateway)
        self.assertEqual(settings["MacAddress"], endpoint.mac_address)
        self.assertEqual(settings["Networks"]["bridge"]["IPAddress"], str(address))
        # Its veth end is on the bridge while it runs, and gone once it stops.
        links = yield deferToThread(netlink.links)
        on_bridge = [name for name, master in links.items() if master == network.bridge]
        veth = f"{network.link_prefix}{c.id[:13 - len(network.link_prefix)]}0"
        self.assertEqual(on_bridge, [veth])
        with open(f"/proc/sys/net/ipv6/conf/{veth}/disable_ipv6") as f:
            self.assertEqual(f.read(), "1\n")
        result = yield self.ross("stop", "-t", "0", "n1")
        self.assertEqual(result.returncode, 0, result.stderr)
        links = yield deferToThread(netlink.links)
        self.assertNotIn(veth, links)
        self.assertEqual(self.daemon.engine.network.endpoints, {})
        c = yield self.inspect("n1")
        self.assertEqual(c.network_settings.networks["bridge"].ip_address, "")

    @inlineCallbacks
    def test_sysctls_of_the_links(self) -> Any:
        """
        A --sysctl naming the container's link (eth0) is written once the
        link is there, however late the network's set-up (held back here)
        finishes; one the kernel refuses still fails the start, with docker's
        125.
        """
        plug = netlink.plug

        def late(interface: netlink.Interface, namespace: int) -> None:
            time.sleep(0.3)
            plug(interface, namespace)

        self.patch(netlink, "plug", late)
        result = yield self.ross("run", "--rm", "--sysctl", "net.ipv4.conf.eth0.rp_filter=2", "--sysctl",
                                 "net.ipv4.ip_forward=1", "busybox", "cat", "/proc/sys/net/ipv4/conf/eth0/rp_filter",
                                 "/proc/sys/net/ipv4/ip_forward")
        self.assertEqual((result.returncode, result.stdout), (0, b"2\n1\n"), result.stderr)
        result = yield self.ross("run", "--rm", "--sysctl", "net.ipv4.conf.eth9.rp_filter=2", "busybox", "true")
        self.assertEqual(result.returncode, 125)
        self.assertIn(b"cannot set sysctl net.ipv4.conf.eth9.rp_filter: No such file or directory", result.stderr)

    @inlineCallbacks
    def test_reachability(self) -> Any:
        """
        Containers reach each other by address, the host reaches them, and
        they reach a server on an address of the host outside the bridge.
        """
        result = yield self.ross("run", "-d", "--name", "web", "busybox", "sh", "-c", HTTPD)
        self.assertEqual(result.returncode, 0, result.stderr)
        c = yield self.inspect("web")
        address = c.network_settings.networks["bridge"].ip_address
        body = yield deferToThread(http_get, address, 80)
        self.assertEqual(body, b"hello\n")
        result = yield self.ross("run", "--rm", "busybox", "wget", "-q", "-O-", f"http://{address}/index.html")
        self.assertEqual((result.returncode, result.stdout), (0, b"hello\n"), result.stderr)

        server = socket.socket()
        server.bind((host_address(), 0))
        server.listen(1)
        # The thread ends even if the container never connects.
        server.settimeout(30)
        self.addCleanup(server.close)
        received: list[bytes] = []

        def serve() -> None:
            conn, _ = server.accept()  # bounded: settimeout above
            conn.settimeout(30)
            with conn:
                received.append(conn.recv(100))
                conn.sendall(b"pong\n")

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        host, port = server.getsockname()
        result = yield self.ross("run", "--rm", "busybox", "sh", "-c", f"echo ping | nc {host} {port}")
        self.assertEqual((result.returncode, result.stdout), (0, b"pong\n"), result.stderr)
        yield deferToThread(thread.join, 10)
        self.assertEqual(received, [b"ping\n"])

    @inlineCallbacks
    def test_host_loopback_unreachable(self) -> Any:
        """
        A packet a container makes itself, to 127.0.0.1 through the bridge
        (route_localnet is on there for published ports: CVE-2020-8558),
        never reaches a service on the host's loopback; the same packet to
        the gateway's address does, so the probe could send it.
        """
        probe = yield deferToThread(compile_probe, "rawudp", RAW_UDP)
        gateway = str(ipaddress.IPv4Network(self.daemon.network.subnet)[1])
        loopback = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(loopback.close)
        loopback.bind(("127.0.0.1", 0))
        control = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(control.close)
        control.bind((gateway, 0))
        # The bridge's MAC changes as ports join it: asked from inside.
        script = (f"ping -c 1 -W 2 {gateway} >/dev/null; "
                  f"mac=$(awk '$1 == \"{gateway}\" {{print $4}}' /proc/net/arp); "
                  f"/probe eth0 $mac 127.0.0.1 {loopback.getsockname()[1]} loopback && "
                  f"/probe eth0 $mac {gateway} {control.getsockname()[1]} control")
        result = yield self.ross("run", "--rm", "-v", f"{probe}:/probe:ro", "busybox", "sh", "-c", script)
        self.assertEqual(result.returncode, 0, result.stderr)
        received = yield deferToThread(receive, control, 10)
        self.assertEqual(received, b"control")
        # Sent before the control datagram, on the same path: it would be
        # there by now.
        received = yield deferToThread(receive, loopback, 1)
        self.assertIsNone(received)

    @inlineCallbacks
    def test_masquerade(self) -> Any:
        """
        Traffic to another host leaves with the host's address: a server on
        a "remote host" (a namespace behind a veth pair, with no route back
        to the bridge's subnet) sees the host's address and answers.
        """
        tag = os.urandom(3).hex()
        namespace, here, there = f"rossremote{tag}", f"rr{tag}h", f"rr{tag}r"
        subnet = ipaddress.IPv4Network(free_subnet())
        near, far = str(subnet[1]), str(subnet[2])

        def ip(*args: str) -> None:
            subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)

        ip("netns", "add", namespace)
        self.addCleanup(subprocess.run, ["ip", "netns", "del", namespace], capture_output=True)
        ip("link", "add", here, "type", "veth", "peer", "name", there)
        self.addCleanup(subprocess.run, ["ip", "link", "del", here], capture_output=True)
        ip("link", "set", there, "netns", namespace)
        ip("addr", "add", f"{near}/24", "dev", here)
        ip("link", "set", here, "up")
        ip("-n", namespace, "addr", "add", f"{far}/24", "dev", there)
        ip("-n", namespace, "link", "set", there, "up")
        server = subprocess.Popen(
            ["ip", "netns", "exec", namespace, sys.executable, "-c",
             "import socket, sys\n"
             "s = socket.socket(); s.bind(('0.0.0.0', 7777)); s.listen(1); s.settimeout(60)\n"
             "print('ready', flush=True)\n"
             "c, peer = s.accept(); c.sendall(b'seen ' + peer[0].encode() + b'\\n'); c.close()\n"],
            stdout=subprocess.PIPE)
        # Last in, first out: killed, then waited for.
        self.addCleanup(server.wait, 10)
        self.addCleanup(server.kill)
        assert server.stdout is not None
        ready = yield deferToThread(select.select, [server.stdout], [], [], 30)
        self.assertTrue(ready[0], "the remote server did not start")
        line = server.stdout.readline()
        self.assertEqual(line, b"ready\n")
        result = yield self.ross("run", "--rm", "busybox", "sh", "-c", f"nc {far} 7777 </dev/null")
        self.assertEqual((result.returncode, result.stdout), (0, f"seen {near}\n".encode()), result.stderr)

    @inlineCallbacks
    def test_published_ports(self) -> Any:
        """
        -p HOST:CONTAINER answers on 127.0.0.1 and on the host's other
        addresses; -p CONTAINER gets an ephemeral port; -P publishes the
        exposed ports; `ross port` and `ross ps` show the mappings; the
        rules go with the container.
        """
        probe = socket.socket()
        probe.bind(("0.0.0.0", 0))
        fixed = probe.getsockname()[1]
        probe.close()
        result = yield self.ross("run", "-d", "--name", "web", "-p", f"{fixed}:80", "-p", "80",
                                 "--expose", "81", "busybox", "sh", "-c", HTTPD)
        self.assertEqual(result.returncode, 0, result.stderr)
        for address in ("127.0.0.1", host_address()):
            body = yield deferToThread(http_get, address, fixed)
            self.assertEqual(body, b"hello\n", address)
        result = yield self.ross("port", "web")
        lines = result.stdout.decode().splitlines()
        self.assertEqual(len(lines), 2, lines)
        self.assertEqual(lines[0], f"80/tcp -> 0.0.0.0:{fixed}")
        ephemeral = int(lines[1].rsplit(":", 1)[1])
        self.assertNotEqual(ephemeral, fixed)
        body = yield deferToThread(http_get, "127.0.0.1", ephemeral)
        self.assertEqual(body, b"hello\n")
        result = yield self.ross("port", "web", "81")
        self.assertNotEqual(result.returncode, 0)
        self.assertIn(b"No public port '81/tcp' published for web", result.stderr)
        result = yield self.ross("ps")
        self.assertIn(f"0.0.0.0:{fixed}->80/tcp, 0.0.0.0:{ephemeral}->80/tcp, 81/tcp", result.stdout.decode())
        # The port is the container's: nothing else can bind it.
        other = socket.socket()
        self.addCleanup(other.close)
        self.assertRaises(OSError, other.bind, ("0.0.0.0", fixed))

        result = yield self.ross("run", "-d", "--name", "all", "-P", "--expose", "80", "busybox", "sh", "-c", HTTPD)
        self.assertEqual(result.returncode, 0, result.stderr)
        result = yield self.ross("port", "all", "80/tcp")
        self.assertEqual(result.returncode, 0, result.stderr)
        port = int(result.stdout.decode().strip().rsplit(":", 1)[1])
        body = yield deferToThread(http_get, host_address(), port)
        self.assertEqual(body, b"hello\n")

        result = yield self.ross("rm", "-f", "web", "all")
        self.assertEqual(result.returncode, 0, result.stderr)
        ruleset = yield deferToThread(subprocess.run, ["nft", "list", "table", "inet", self.daemon.network.table],
                                      capture_output=True, text=True)
        self.assertEqual(published_rules(ruleset.stdout), 0, ruleset.stdout)
        free = socket.socket()
        self.addCleanup(free.close)
        free.bind(("0.0.0.0", fixed))

    @inlineCallbacks
    def test_port_ranges(self) -> Any:
        """
        -p with ranges: a container range on a host range of the same size
        publishes each port; a single port on a host range takes the first
        free one; ranges of different sizes are refused as docker does.
        """
        base = free_port_run(4)
        result = yield self.ross("run", "-d", "--name", "web", "-p", f"{base}-{base + 1}:80-81",
                                 "busybox", "sh", "-c", HTTPD)
        self.assertEqual(result.returncode, 0, result.stderr)
        result = yield self.ross("port", "web")
        self.assertEqual(result.stdout.decode().splitlines(),
                         [f"80/tcp -> 0.0.0.0:{base}", f"81/tcp -> 0.0.0.0:{base + 1}"])
        body = yield deferToThread(http_get, "127.0.0.1", base)
        self.assertEqual(body, b"hello\n")
        # The range's first ports are taken: the next free one.
        result = yield self.ross("run", "-d", "--name", "web2", "-p", f"{base}-{base + 3}:80",
                                 "busybox", "sh", "-c", HTTPD)
        self.assertEqual(result.returncode, 0, result.stderr)
        result = yield self.ross("port", "web2", "80")
        self.assertEqual(result.stdout.decode().strip(), f"0.0.0.0:{base + 2}")
        body = yield deferToThread(http_get, "127.0.0.1", base + 2)
        self.assertEqual(body, b"hello\n")
        result = yield self.ross("run", "--rm", "-p", f"{base}-{base + 2}:80-81", "busybox", "true")
        self.assertEqual(result.returncode, 125)
        self.assertIn(f"Invalid ranges specified for container and host Ports: 80-81 and {base}-{base + 2}".encode(),
                      result.stderr)
        result = yield self.ross("run", "--rm", "-p", f"{base}-{base + 1}:80", "busybox", "true")
        self.assertEqual(result.returncode, 125)
        self.assertIn(f"Bind for 0.0.0.0:{base}-{base + 1} failed: port is already allocated".encode(), result.stderr)

    @inlineCallbacks
    def test_live_ports(self) -> Any:
        """
        ross port add publishes a port of a running container at once (and
        at its next starts), ross port rm unpublishes it at once; ps,
        inspect and events follow; a taken port, a port published twice,
        an unknown one and a container without a network are refused.
        """
        port = free_port_run(2)
        since = str(int(time.time()) - 1)
        result = yield self.ross("run", "-d", "--name", "web", "busybox", "sh", "-c", HTTPD)
        self.assertEqual(result.returncode, 0, result.stderr)
        result = yield self.ross("port", "add", "web", f"{port}:80")
        self.assertEqual((result.returncode, result.stdout), (0, f"80/tcp -> 0.0.0.0:{port}\n".encode()),
                         result.stderr)
        body = yield deferToThread(http_get, "127.0.0.1", port)
        self.assertEqual(body, b"hello\n")
        result = yield self.ross("ps")
        self.assertIn(f"0.0.0.0:{port}->80/tcp", result.stdout.decode())
        info = json.loads((yield self.ross("inspect", "web")).stdout)[0]
        self.assertEqual(info["HostConfig"]["PortBindings"], {"80/tcp": [{"HostIp": "", "HostPort": str(port)}]})

        result = yield self.ross("port", "add", "web", f"{port}:80")
        self.assertEqual(result.returncode, 125)
        self.assertIn(f"port {port}->80/tcp is already published by web".encode(), result.stderr)
        result = yield self.ross("run", "-d", "--name", "other", "busybox", "sleep", "600")
        self.assertEqual(result.returncode, 0, result.stderr)
        result = yield self.ross("port", "add", "other", f"{port}:80")
        self.assertIn(f"Bind for 0.0.0.0:{port} failed: port is already allocated".encode(), result.stderr)
        result = yield self.ross("port", "web")
        self.assertEqual(result.stdout.decode().splitlines(), [f"80/tcp -> 0.0.0.0:{port}"])

        result = yield self.ross("port", "rm", "web", "80")
        self.assertEqual((result.returncode, result.stdout), (0, f"80/tcp -> 0.0.0.0:{port}\n".encode()),
                         result.stderr)
        free = socket.socket()
        self.addCleanup(free.close)
        free.bind(("0.0.0.0", port))
        free.close()
        ruleset = yield deferToThread(subprocess.run, ["nft", "list", "table", "inet", self.daemon.network.table],
                                      capture_output=True, text=True, timeout=30)
        self.assertEqual(published_rules(ruleset.stdout), 0, ruleset.stdout)
        result = yield self.ross("port", "rm", "web", "80")
        self.assertIn(b"No public port '80/tcp' published for web", result.stderr)

        # A stopped container: recorded, published at its next start.
        result = yield self.ross("stop", "-t", "0", "web")
        self.assertEqual(result.returncode, 0, result.stderr)
        result = yield self.ross("port", "add", "web", f"{port + 1}:80")
        self.assertEqual((result.returncode, result.stdout), (0, b""), result.stderr)
        result = yield self.ross("start", "web")
        self.assertEqual(result.returncode, 0, result.stderr)
        body = yield deferToThread(http_get, "127.0.0.1", port + 1)
        self.assertEqual(body, b"hello\n")

        result = yield self.ross("events", "--since", since, "--until", str(int(time.time()) + 1),
                                 "--filter", "name=web", "--filter", "type=container")
        actions = [line.split()[2] for line in result.stdout.decode().splitlines()]
        self.assertEqual([a for a in actions if "publish" in a], ["publish", "unpublish", "publish"])
        result = yield self.ross("run", "-d", "--name", "hosted", "--network", "host", "busybox", "sleep", "600")
        self.assertEqual(result.returncode, 0, result.stderr)
        result = yield self.ross("port", "add", "hosted", "80")
        self.assertIn(b"uses network mode host: it has no ports to publish", result.stderr)

    @inlineCallbacks
    def test_port_conflict(self) -> Any:
        """
        A host port in use is refused at start with docker's message,
        leaving no address, port, rule or link behind; the container stays
        created and starts once the port is free.
        """
        holder = socket.socket()
        holder.bind(("0.0.0.0", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        result = yield self.ross("run", "-d", "--name", "clash", "-p", f"{port}:80", "busybox", "sleep", "600")
        self.assertEqual(result.returncode, 125)
        self.assertIn(f"Bind for 0.0.0.0:{port} failed: port is already allocated".encode(), result.stderr)
        self.assertEqual(self.daemon.engine.network.endpoints, {})
        links = yield deferToThread(netlink.links)
        self.assertEqual([n for n, m in links.items() if m == self.daemon.network.bridge], [])
        # Recorded as docker's: the reason, exit code 128.
        result = yield self.ross("inspect", "-f", "{{.State.Status}} {{.State.ExitCode}} {{.State.Error}}", "clash")
        self.assertEqual(result.stdout.decode(),
                         f"created 128 Bind for 0.0.0.0:{port} failed: port is already allocated\n")
        holder.close()
        result = yield self.ross("start", "clash")
        self.assertEqual(result.returncode, 0, result.stderr)
        result = yield self.ross("inspect", "-f", "{{.State.Status}} {{.State.ExitCode}} [{{.State.Error}}]", "clash")
        self.assertEqual(result.stdout, b"running 0 []\n")
        # A second container cannot take the first one's port.
        result = yield self.ross("run", "-d", "--name", "clash2", "-p", f"{port}:80", "busybox", "sleep", "600")
        self.assertEqual(result.returncode, 125)
        self.assertIn(b"port is already allocated", result.stderr)
        self.assertEqual(len(self.daemon.engine.network.endpoints), 1)

    @inlineCallbacks
    def test_addresses_never_shared(self) -> Any:
        """
        Many containers started at once get distinct addresses; addresses
        freed by stopped containers are not those of running ones.
        """
        names = [f"c{i}" for i in range(12)]
        results = yield deferToThread(lambda: [
            r for r in _parallel([lambda n=n: _cli(self.daemon.address, "run", "-d", "--name", n, "busybox",
                                                   "sleep", "600") for n in names])])
        for r in results:
            self.assertEqual(r.returncode, 0, r.stderr)
        addresses = {e.container_id: e.address for e in self.daemon.engine.network.endpoints.values()}
        self.assertEqual(len(set(addresses.values())), len(names))
        for name in names[:6]:
            result = yield self.ross("stop", "-t", "0", name)
            self.assertEqual(result.returncode, 0, result.stderr)
        for name in names[:6]:
            result = yield self.ross("start", name)
            self.assertEqual(result.returncode, 0, result.stderr)
        live = [e.address for e in self.daemon.engine.network.endpoints.values()]
        self.assertEqual(len(live), len(names))
        self.assertEqual(len(set(live)), len(names))

    @inlineCallbacks
    def test_bad_input(self) -> Any:
        """
        Bad port specs, unknown networks and --ip on the default network
        are refused before anything is created.
        """
        for spec in ("abc", "80/xyz", "1:2:3:4", "70000"):
            result = yield self.ross("run", "--rm", "-p", spec, "busybox", "true")
            self.assertEqual(result.returncode, 125, spec)
            self.assertIn(b"invalid", result.stderr.lower(), spec)
        result = yield self.ross("run", "--rm", "--network", "nosuchnet", "busybox", "true")
        self.assertEqual(result.returncode, 125)
        self.assertIn(b"network nosuchnet not found", result.stderr)
        result = yield self.ross("run", "--rm", "--ip", "10.1.2.3", "busybox", "true")
        self.assertEqual(result.returncode, 125)
        self.assertIn(b"user specified IP address is supported on user defined networks only", result.stderr)
        result = yield self.ross("run", "--rm", "--network-alias", "www", "busybox", "true")
        self.assertEqual(result.returncode, 125)
        self.assertIn(b"network-scoped alias is supported only for containers in user defined networks", result.stderr)

        def create(binding: Any) -> Any:
            request = container_pb2.CreateContainerRequest()
            request.config.image = "busybox"
            request.host_config.port_bindings.append(binding)
            try:
                self.api.containers.CreateContainer(request)
            except grpc.RpcError as e:
                return e.code()
            return None

        code = yield deferToThread(create, container_pb2.PortBinding(container_port="0/tcp"))
        self.assertEqual(code, grpc.StatusCode.INVALID_ARGUMENT)
        code = yield deferToThread(create, container_pb2.PortBinding(container_port="80/tcp", host_ip="::1"))
        self.assertEqual(code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertEqual(self.daemon.engine.containers.records, {})

    @inlineCallbacks
    def test_dns_hosts_and_mac_options(self) -> Any:
        """
        --dns-search and --dns-option replace the search domains and
        options of resolv.conf, --add-host NAME:host-gateway names the
        host's address on the default bridge, --mac-address sets eth0's
        MAC; bad values are refused at create.
        """
        gateway = str(ipaddress.IPv4Network(self.daemon.network.subnet)[1])
        result = yield self.ross("run", "--rm", "--dns-search", "a.test", "--dns-search", "b.test",
                                 "--dns-option", "ndots:3", "--add-host", "me:host-gateway",
                                 "--mac-address", "02:00:00:AA:BB:CC", "busybox", "sh", "-c",
                                 "cat /etc/resolv.conf /etc/hosts /sys/class/net/eth0/address")
        self.assertEqual(result.returncode, 0, result.stderr)
        out = result.stdout.decode()
        self.assertIn("search a.test b.test\noptions ndots:3\n", out)
        self.assertIn(f"{gateway}\tme\n", out)
        self.assertTrue(out.endswith("02:00:00:aa:bb:cc\n"), out)
        result = yield self.ross("run", "--rm", "--network", "none", "--add-host", "me:host-gateway",
                                 "--dns-search", ".", "busybox", "sh", "-c", "cat /etc/hosts /etc/resolv.conf")
        self.assertIn(f"{gateway}\tme\n", result.stdout.decode())
        self.assertNotIn("search", result.stdout.decode())
        for flags in (["--mac-address", "01:00:00:00:00:01"], ["--mac-address", "nonsense"],
                      ["--dns-search", "a b"]):
            result = yield self.ross("run", "--rm", *flags, "busybox", "true")
            self.assertEqual(result.returncode, 125, flags)
            self.assertIn(b"invalid", result.stderr, flags)

    @inlineCallbacks
    def test_container_network_mode(self) -> Any:
        """
        --network container:NAME joins a running container's network: its
        interfaces, its loopback, its /etc/hosts; options that would
        configure a network of its own conflict; a container that does not
        run, or does not exist, cannot be joined.
        """
        result = yield self.ross("run", "-d", "--name", "web", "-h", "webhost", "busybox", "sh", "-c", HTTPD)
        self.assertEqual(result.returncode, 0, result.stderr)
        address = json.loads((yield self.ross("inspect", "web")).stdout)[0]["NetworkSettings"]["IPAddress"]
        result = yield self.ross("run", "--rm", "--network", "container:web", "busybox", "sh", "-c",
                                 "timeout 10 wget -q -O- http://127.0.0.1/index.html; ip -o -4 addr show eth0; "
                                 "cat /etc/hosts; hostname")
        self.assertEqual(result.returncode, 0, result.stderr)
        out = result.stdout.decode()
        self.assertTrue(out.startswith("hello\n"), out)
        # Its hostname too, as docker's.
        self.assertTrue(out.endswith("\nwebhost\n"), out)
        self.assertIn(f"inet {address}/", out)
        self.assertIn(f"{address}\twebhost\n", out)
        self.assertEqual(len(self.daemon.engine.network.endpoints), 1)
        result = yield self.ross("run", "--rm", "--network", "container:web", "-p", "80", "busybox", "true")
        self.assertEqual(result.returncode, 125)
        self.assertIn(b"conflicting options: port publishing and the container type network mode", result.stderr)
        result = yield self.ross("run", "--rm", "--network", "container:nosuch", "busybox", "true")
        self.assertIn(b"No such container: nosuch", result.stderr)
        result = yield self.ross("create", "--name", "joiner", "--network", "container:web", "busybox", "true")
        self.assertEqual(result.returncode, 0, result.stderr)
        result = yield self.ross("stop", "-t", "0", "web")
        self.assertEqual(result.returncode, 0, result.stderr)
        result = yield self.ross("start", "joiner")
        self.assertNotEqual(result.returncode, 0)
        self.assertIn(b"cannot join network of a non running container: web", result.stderr)

    @inlineCallbacks
    def test_host_and_none(self) -> Any:
        """
        --network none keeps loopback only; --network host shares the
        host's interfaces; neither gets an address of the bridge.
        """
        result = yield self.ross("run", "--rm", "--network", "none", "busybox", "sh", "-c", "ls /sys/class/net")
        self.assertEqual(result.stdout.split(), [b"lo"])
        result = yield self.ross("run", "--rm", "--network", "host", "busybox", "ls", "/sys/class/net")
        self.assertIn(self.daemon.network.bridge.encode(), result.stdout.split())
        self.assertEqual(self.daemon.engine.network.endpoints, {})
        # The host's /etc/hosts, its own names with it (docker's), and the
        # --add-host lines after.
        with open("/etc/hosts") as f:
            host_hosts = f.read()
        result = yield self.ross("run", "--rm", "--network", "host", "--add-host", "extra.test:192.0.2.9",
                                 "busybox", "cat", "/etc/hosts")
        self.assertEqual(result.stdout.decode(), host_hosts.rstrip("\n") + "\n192.0.2.9\textra.test\n")
        # Ports published there mean nothing: docker's warning says so,
        # attached, detached and at create.
        warning = b"WARNING: Published ports are discarded when using host network mode\n"
        for argv in (["run", "--rm"], ["run", "-d"], ["create"]):
            result = yield self.ross(*argv, "--network", "host", "-p", "80", "busybox", "true")
            self.assertEqual((result.returncode, result.stderr), (0, warning), argv)
        result = yield self.ross("run", "--rm", "-p", "80", "busybox", "true")
        self.assertEqual(result.stderr, b"")


def _cli(address: str, *args: str) -> Any:
    from ross.testing.daemon import run_cli

    return run_cli(address, *args)


def _parallel(calls: list[Any]) -> list[Any]:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(lambda f: f(), calls))


class CrashTests(TestCase):
    """
    A daemon killed with SIGKILL while containers run: at the next start,
    what the dead held is freed and what the living hold is kept.
    """

    timeout = 180

    def setUp(self) -> None:
        self.daemon = DaemonProcess()
        self.addCleanup(self.daemon.cleanup)

    def ross(self, *args: str) -> Any:
        result = self.daemon.ross(*args)
        return result

    def test_restart_after_kill(self) -> Any:
        return deferToThread(self._restart_after_kill)

    def _restart_after_kill(self) -> None:
        d = self.daemon
        d.start()
        archive = docker_archive(d.base / "busybox.tar")
        self.assertEqual(d.ross("load", "-i", str(archive.path)).returncode, 0)
        probe = socket.socket()
        probe.bind(("0.0.0.0", 0))
        port = probe.getsockname()[1]
        probe.close()
        r = d.ross("network", "create", "--subnet", free_subnet(), "app")
        self.assertEqual(r.returncode, 0, r.stderr)
        for args in (("--name", "keep", "-p", f"{port}:80"), ("--name", "dies"), ("--name", "peer", "--network", "app")):
            r = d.ross("run", "-d", *args, "busybox", "sh", "-c", HTTPD)
            self.assertEqual(r.returncode, 0, r.stderr)
        info = {name: json.loads(d.ross("inspect", name).stdout)[0] for name in ("keep", "dies")}
        d.kill()
        # While the daemon is down: one container dies, and a link is left
        # on the bridge as by a start cut short.
        subprocess.run(["kill", "-9", str(info["dies"]["State"]["Pid"])], check=True, timeout=30)
        subprocess.run(["ip", "link", "add", "vrleftover0", "type", "veth", "peer", "name", "vrleftover1"], check=True,
                           timeout=30)
        subprocess.run(["ip", "link", "set", "vrleftover0", "master", d.network.bridge], check=True, timeout=30)
        # Published ports keep working without the daemon.
        self.assertEqual(http_get("127.0.0.1", port), b"hello\n")
        d.spawn()
        d.wait_ready()
        links = netlink.links()
        self.assertNotIn("vrleftover0", links)
        self.assertNotIn("vrleftover1", links)
        self.assertNotIn(f"vr{info['dies']['Id'][:11]}0", links)
        self.assertIn(f"vr{info['keep']['Id'][:11]}0", links)
        keep = json.loads(d.ross("inspect", "keep").stdout)[0]["NetworkSettings"]
        self.assertEqual(keep["IPAddress"], info["keep"]["NetworkSettings"]["IPAddress"])
        dies = json.loads(d.ross("inspect", "dies").stdout)[0]
        self.assertEqual(dies["State"]["Status"], "exited")
        self.assertEqual(dies["NetworkSettings"]["IPAddress"], "")
        self.assertEqual(http_get("127.0.0.1", port), b"hello\n")
        # The survivor's port is still reserved, its address never reused.
        r = d.ross("run", "-d", "--name", "new", "-p", f"{port}:80", "busybox", "sleep", "600")
        self.assertEqual(r.returncode, 125)
        self.assertIn(b"port is already allocated", r.stderr)
        addresses = set()
        for i in range(4):
            r = d.ross("run", "-d", "--name", f"more{i}", "busybox", "sleep", "600")
            self.assertEqual(r.returncode, 0, r.stderr)
            addresses.add(json.loads(d.ross("inspect", f"more{i}").stdout)[0]["NetworkSettings"]["IPAddress"])
        self.assertNotIn(keep["IPAddress"], addresses)
        self.assertEqual(len(addresses), 4)
        # The user network's names resolve again.
        r = d.ross("run", "--rm", "--network", "app", "busybox", "wget", "-q", "-O-", "http://peer/index.html")
        self.assertEqual((r.returncode, r.stdout), (0, b"hello\n"), r.stderr)
        names = ["keep", "dies", "new", "peer"] + [f"more{i}" for i in range(4)]
        d.ross("rm", "-f", *names)
        d.stop()
        ruleset = subprocess.run(["nft", "list", "table", "inet", d.network.table], capture_output=True, text=True,
                                 timeout=30)
        self.assertEqual(published_rules(ruleset.stdout), 0, ruleset.stdout)
        self.assertEqual([n for n, m in netlink.links().items() if m == d.network.bridge], [])


class EmbeddedDNSTests(TestCase):
    """
    The DNS server of a network on its own: container names answered,
    everything else forwarded.
    """

    @inlineCallbacks
    def test_answers_and_forwards(self) -> Any:
        from twisted.internet import reactor as global_reactor
        from twisted.names import client, dns, error, hosts, server

        from ross.engine.network.dns import NetworkDNS

        reactor: Any = global_reactor
        hosts_file = self.mktemp()
        with open(hosts_file, "w") as f:
            f.write("192.0.2.77 upstream.test\n")
        upstream = server.DNSServerFactory(clients=[hosts.Resolver(file=hosts_file)])
        upstream_port = reactor.listenUDP(0, dns.DNSDatagramProtocol(upstream), interface="127.0.0.1")
        self.addCleanup(upstream_port.stopListening)
        asked = []

        def lookup(network_id: str, name: str, source: str) -> list[str]:
            asked.append((network_id, name, source))
            return ["10.9.9.9"] if name == "web" else []

        service = NetworkDNS(reactor, lookup, servers=[("127.0.0.1", upstream_port.getHost().port)], port=0)
        service.serve("net1", "127.0.0.1")
        self.addCleanup(service.stop)
        resolver = client.Resolver(servers=[service.address("net1")], reactor=reactor)
        answers, _, _ = yield resolver.lookupAddress("web")
        self.assertEqual([a.payload.dottedQuad() for a in answers], ["10.9.9.9"])
        self.assertEqual(asked[0], ("net1", "web", "127.0.0.1"))
        # A known name has no IPv6 record: an empty answer, not a forward.
        answers, _, _ = yield resolver.lookupIPV6Address("web")
        self.assertEqual(answers, [])
        answers, _, _ = yield resolver.lookupAddress("upstream.test")
        self.assertEqual([a.payload.dottedQuad() for a in answers], ["192.0.2.77"])
        yield self.assertFailure(resolver.lookupAddress("nosuch.test"), error.DNSNameError)


class UnitTests(TestCase):
    """
    The pure parts: subnets, allocation, port specs, the rule set.
    """

    def test_allocate_wraps_and_skips(self) -> None:
        subnet = ipaddress.IPv4Network("10.0.0.0/29")
        gateway = ipaddress.IPv4Address("10.0.0.1")
        used = {ipaddress.IPv4Address("10.0.0.3")}
        self.assertEqual(str(ipam.allocate(subnet, gateway, used)), "10.0.0.2")
        self.assertEqual(str(ipam.allocate(subnet, gateway, used, ipaddress.IPv4Address("10.0.0.2"))), "10.0.0.4")
        self.assertEqual(str(ipam.allocate(subnet, gateway, used, ipaddress.IPv4Address("10.0.0.6"))), "10.0.0.2")
        full = {ipaddress.IPv4Address(f"10.0.0.{i}") for i in range(2, 7)}
        self.assertRaises(ResourceExhausted, ipam.allocate, subnet, gateway, full)

    def test_subnets(self) -> None:
        taken = [ipaddress.IPv4Network("10.88.0.0/16"), ipaddress.IPv4Network("10.89.3.0/24")]
        self.assertEqual(str(ipam.choose_subnet(taken)), "10.90.0.0/16")
        for bad in ("10.0.0.1/24", "nonsense", "10.0.0.0/31", "127.0.0.0/8", "10.0.0.0/33"):
            self.assertRaises(InvalidArgument, ipam.parse_subnet, bad)
        subnet = ipaddress.IPv4Network("10.1.0.0/24")
        self.assertRaises(InvalidArgument, ipam.parse_gateway, "10.2.0.1", subnet)
        self.assertRaises(InvalidArgument, ipam.static_address, "10.2.0.5", subnet, subnet.network_address + 1, ())
        self.assertRaises(FailedPrecondition, ipam.static_address, "10.1.0.5", subnet, subnet.network_address + 1,
                          {ipaddress.IPv4Address("10.1.0.5")})

    def test_port_mappings(self) -> None:
        mappings = port_mappings([("80/tcp", "", "8080"), ("53/udp", "127.0.0.1", "")], True, ["80/tcp", "443/tcp"])
        self.assertEqual(mappings, [PortMapping(80, "tcp", "", 8080), PortMapping(53, "udp", "127.0.0.1", -1),
                                    PortMapping(443, "tcp", "", -1)])
        self.assertEqual(port_mappings([], False, ["443/tcp"]), [PortMapping(443, "tcp", "", 0)])
        # IPv6 host addresses, in one spelling.
        self.assertEqual(port_mappings([("80/tcp", "[0:0::1]", "8080")], False, []),
                         [PortMapping(80, "tcp", "::1", 8080)])
        self.assertRaises(InvalidArgument, port_mappings, [("80/tcp", "localhost", "")], False, [])
        self.assertRaises(InvalidArgument, port_mappings, [("x/tcp", "", "")], False, [])

    def test_render_internal(self) -> None:
        script = nft.render("t", [nft.BridgeRules("b0", "10.0.0.0/24", internal=True)], [])
        self.assertNotIn("masquerade", script.split("chain postrouting")[1].split("chain forward")[0])
        self.assertIn('iifname "b0" oifname != "b0" drop', script)
        self.assertIn('oifname "b0" iifname != "b0" drop', script)

    def test_render(self) -> None:
        script = nft.render("t", [nft.BridgeRules("b0", "10.0.0.0/24"), nft.BridgeRules("b1", "10.0.1.0/24")],
                            [nft.Forward("tcp", "127.0.0.1", 8080, "10.0.0.2", 80)])
        self.assertIn("ip daddr 127.0.0.1 tcp dport 8080 dnat ip to 10.0.0.2:80", script)
        self.assertIn('ip saddr 10.0.0.0/24 oifname != "b0" masquerade', script)
        self.assertIn('iifname "b1" oifname != "b1" oifname { "b0", "b1" } drop', script)
        self.assertIn('iifname { "b0", "b1" } ip daddr 127.0.0.0/8 ct status dnat accept\n'
                      '    iifname { "b0", "b1" } ip daddr 127.0.0.0/8 drop comment "ross:own"', script)
        self.assertNotIn("ip6 saddr", script)
        # The table of an older Ross (family ip) goes with the replacement.
        self.assertTrue(script.startswith("add table ip t\ndelete table ip t\nadd table inet t\ndelete table inet t\n"))

    def test_render_ipv6(self) -> None:
        """
        A network with IPv6: NAT66 out and for hairpin and [::1]; ports on
        every address published in both versions, on one address in its
        own; [::1] left to the host's sockets where the kernel cannot DNAT
        it.
        """
        forwards = [nft.Forward("tcp", "", 8080, "10.0.0.2", 80), nft.Forward("tcp", "::", 8080, "fd00::2", 80),
                    nft.Forward("udp", "::1", 53, "fd00::2", 5353)]
        script = nft.render("t", [nft.BridgeRules("b0", "10.0.0.0/24", subnet6="fd00::/64")], forwards)
        self.assertIn("meta nfproto ipv4 tcp dport 8080 dnat ip to 10.0.0.2:80", script)
        self.assertIn("meta nfproto ipv6 tcp dport 8080 dnat ip6 to [fd00::2]:80", script)
        self.assertIn("ip6 daddr ::1 udp dport 53 dnat ip6 to [fd00::2]:5353", script)
        self.assertIn('ip6 saddr fd00::/64 oifname != "b0" masquerade', script)
        self.assertIn('oifname "b0" ct status dnat ip6 saddr { ::1, fd00::/64 } masquerade', script)
        self.assertIn('iifname { "b0" } ip6 daddr ::1 drop comment "ross:own"', script)
        self.assertNotIn("ip6 daddr ::1 return", script)
        script = nft.render("t", [nft.BridgeRules("b0", "10.0.0.0/24", subnet6="fd00::/64")], forwards,
                            loopback6=False)
        self.assertIn("  chain publish {\n    ip6 daddr ::1 return\n", script)
        internal = nft.render("t", [nft.BridgeRules("b0", "10.0.0.0/24", internal=True, subnet6="fd00::/64")], [])
        self.assertNotIn("masquerade", internal)

    def test_ipv6_pools(self) -> None:
        """
        IPv6 subnets and addresses: a /64 of the daemon's own unique local
        /48 (the same for the same seed) clear of the host's routes, the
        next free address after the last given, the subnet-router anycast
        and the gateway never, IPv4 and IPv6 never mixed up.
        """
        pool = ipam.unique_local_pool("network-id")
        self.assertEqual(pool, ipam.unique_local_pool("network-id"))
        self.assertNotEqual(pool, ipam.unique_local_pool("another"))
        self.assertEqual((pool.prefixlen, pool.network_address.packed[0]), (48, 0xFD))
        first = next(pool.subnets(new_prefix=64))
        self.assertEqual(ipam.choose_subnet([first], pool, 64), list(pool.subnets(new_prefix=64))[1])
        self.assertEqual(ipam.choose_subnet([ipaddress.IPv4Network("0.0.0.0/0")], pool, 64), first)
        subnet = ipam.parse_subnet("fd00:1::/126", 6)
        gateway = ipam.parse_gateway("fd00:1::1", subnet)
        used = {ipaddress.IPv6Address("fd00:1::2")}
        self.assertEqual(str(ipam.allocate(subnet, gateway, used)), "fd00:1::3")
        self.assertRaises(ResourceExhausted, ipam.allocate, subnet, gateway, used | {ipaddress.IPv6Address("fd00:1::3")})
        self.assertEqual(str(ipam.allocate(ipam.parse_subnet("fd00:2::/64", 6), ipaddress.IPv6Address("fd00:2::1"),
                                           (), ipaddress.IPv6Address("fd00:2::ffff"))), "fd00:2::1:0")
        for bad, version in (("fd00::1/64", 6), ("fd00::/127", 6), ("fe80::/64", 6), ("::1/128", 6),
                             ("ff00::/8", 6), ("10.0.0.0/24", 6), ("fd00::/64", 4)):
            self.assertRaises(InvalidArgument, ipam.parse_subnet, bad, version)
        self.assertRaises(InvalidArgument, ipam.parse_gateway, "10.0.0.1", subnet)
        self.assertRaises(InvalidArgument, ipam.parse_gateway, "fd00:1::", subnet)
        self.assertRaises(InvalidArgument, ipam.static_address, "fd00:9::5", subnet, gateway, ())
        self.assertRaises(FailedPrecondition, ipam.static_address, "fd00:1::2", subnet, gateway, used)
        self.assertIsNone(ipam.overlapping(ipaddress.IPv6Network("::/0"), [ipaddress.IPv4Network("0.0.0.0/0")]))


def free_subnet() -> str:
    """
    A /24 of 10.240.0.0/12 that no route of the host covers.
    """
    import random

    taken = netlink.routed_networks()
    pool = list(ipaddress.IPv4Network("10.240.0.0/12").subnets(new_prefix=20))
    return str(ipam.choose_subnet(taken, random.choice(pool), 24))


class UserNetworkTests(ContainerTestCase):
    @inlineCallbacks
    def create(self, name: str, subnet: str = "") -> Any:
        subnet = subnet or free_subnet()
        result = yield self.ross("network", "create", "--subnet", subnet, name)
        self.assertEqual(result.returncode, 0, result.stderr)
        return subnet

    @inlineCallbacks
    def test_lifecycle_and_refusals(self) -> Any:
        """
        create, ls, inspect, rm of a network with its bridge; a taken name,
        a bad or overlapping subnet, an unknown network and the default
        network's removal are refused with docker's messages.
        """
        subnet = yield self.create("tnet")
        result = yield self.ross("network", "inspect", "tnet")
        info = json.loads(result.stdout)[0]
        self.assertEqual(info["IPAM"]["Config"], [{"Subnet": subnet, "Gateway": str(ipaddress.IPv4Network(subnet)[1])}])
        bridge = info["Options"]["com.docker.network.bridge.name"]
        links = yield deferToThread(netlink.links)
        self.assertIn(bridge, links)
        result = yield self.ross("network", "ls")
        names = [line.split()[1] for line in result.stdout.decode().splitlines()[1:]]
        self.assertEqual(names, ["bridge", "host", "none", "tnet"])

        result = yield self.ross("network", "create", "tnet")
        self.assertEqual(result.returncode, 125)
        self.assertIn(b"network with name tnet already exists", result.stderr)
        result = yield self.ross("network", "create", "--subnet", subnet, "other")
        self.assertEqual(result.returncode, 125)
        self.assertIn(b"Pool overlaps with other one on this address space", result.stderr)
        for bad in ("10.1.2.3/24", "300.1.0.0/16", "10.0.0.0/31"):
            result = yield self.ross("network", "create", "--subnet", bad, "other")
            self.assertEqual(result.returncode, 125, bad)
            self.assertIn(b"invalid subnet", result.stderr)
        result = yield self.ross("network", "create", "--subnet", free_subnet(), "--gateway", "10.0.0.1", "other")
        self.assertIn(b"invalid gateway", result.stderr)
        result = yield self.ross("network", "create", "bad/name")
        self.assertIn(b"invalid network name", result.stderr)
        result = yield self.ross("network", "inspect", "nosuch")
        self.assertIn(b"network nosuch not found", result.stderr)
        for builtin in ("bridge", "host", "none"):
            result = yield self.ross("network", "rm", builtin)
            self.assertIn(f"{builtin} is a pre-defined network and cannot be removed".encode(), result.stderr)
        result = yield self.ross("network", "ls", "-q", "--filter", "type=custom")
        self.assertEqual(len(result.stdout.split()), 1)
        result = yield self.ross("run", "-d", "--name", "hosted", "--network", "host", "busybox", "sleep", "600")
        self.assertEqual(result.returncode, 0, result.stderr)
        result = yield self.ross("network", "inspect", "host")
        info = json.loads(result.stdout)[0]
        self.assertEqual((info["Driver"], [c["Name"] for c in info["Containers"].values()]), ("host", ["hosted"]))
        result = yield self.ross("network", "connect", "none", "hosted")
        self.assertIn(b"it is a network mode", result.stderr)

        result = yield self.ross("network", "rm", "tnet")
        self.assertEqual(result.returncode, 0, result.stderr)
        links = yield deferToThread(netlink.links)
        self.assertNotIn(bridge, links)
        result = yield self.ross("network", "rm", "tnet")
        self.assertIn(b"network tnet not found", result.stderr)

    @inlineCallbacks
    def test_concurrent_changes(self) -> Any:
        """
        Changes of one network that overlap: a network still being made
        can be neither removed nor made again; a second rm while the first
        deletes the bridge is told the network is gone; a connect whose
        network is removed meanwhile fails with NotFound and keeps nothing,
        one whose container exits meanwhile connects it as a stopped one;
        two disconnects at once disconnect once. No KeyError reaches the
        caller (an INTERNAL status).
        """
        network = self.daemon.engine.network
        creating = Deferred.fromCoroutine(network.create_network("racing", subnet=free_subnet()))
        yield self.assertFailure(Deferred.fromCoroutine(network.remove_network("racing")), NotFound)
        yield self.assertFailure(Deferred.fromCoroutine(network.create_network("racing")), AlreadyExists)
        yield creating
        first = Deferred.fromCoroutine(network.remove_network("racing"))
        second = Deferred.fromCoroutine(network.remove_network("racing"))
        yield self.assertFailure(second, NotFound)
        yield first
        self.assertNotIn("racing", [n.name for n in network.networks.values()])

        yield self.create("racing")
        result = yield self.ross("create", "--name", "late", "busybox", "true")
        self.assertEqual(result.returncode, 0, result.stderr)
        record = self.daemon.engine.containers.resolve("late")
        connecting = Deferred.fromCoroutine(network.connect("racing", record, 0))
        yield Deferred.fromCoroutine(network.remove_network("racing"))
        yield self.assertFailure(connecting, NotFound)
        self.assertEqual([key for key in network.members if key[1] == record.id], [])

        yield self.create("racing")
        # Its process gone as it is connected (the container exited
        # meanwhile): connected for its next start, as a stopped one.
        gone = subprocess.Popen(["true"])
        gone.wait(10)
        yield Deferred.fromCoroutine(network.connect("racing", record, gone.pid))
        self.assertIn((network.lookup("racing").id, record.id), network.members)
        self.assertEqual(network.endpoints.of(record.id), [])
        first = Deferred.fromCoroutine(network.disconnect("racing", record))
        second = Deferred.fromCoroutine(network.disconnect("racing", record))
        yield self.assertFailure(second, FailedPrecondition)
        yield first
        result = yield self.ross("network", "rm", "racing")
        self.assertEqual(result.returncode, 0, result.stderr)

    @inlineCallbacks
    def test_names_and_isolation(self) -> Any:
        """
        On a user-defined network containers resolve each other by name
        and other names still resolve through the host; containers of
        another network, or of the default one, cannot reach them.
        """
        yield self.create("front")
        yield self.create("back")
        result = yield self.ross("run", "-d", "--name", "srv", "--network", "front", "--network-alias", "www",
                                 "busybox", "sh", "-c", HTTPD)
        self.assertEqual(result.returncode, 0, result.stderr)
        result = yield self.ross("run", "--rm", "--network", "front", "busybox", "sh", "-c",
                                 "cat /etc/resolv.conf; wget -q -O- http://srv/index.html; wget -q -O- http://www/index.html")
        self.assertEqual(result.returncode, 0, result.stderr)
        gateway = json.loads((yield self.ross("network", "inspect", "front")).stdout)[0]["IPAM"]["Config"][0]["Gateway"]
        self.assertIn(f"nameserver {gateway}\n".encode(), result.stdout)
        self.assertTrue(result.stdout.endswith(b"hello\nhello\n"), result.stdout)
        result = yield self.ross("run", "--rm", "--network", "front", "busybox", "nslookup", "nosuch-name.invalid")
        self.assertNotEqual(result.returncode, 0)
        address = json.loads((yield self.ross("inspect", "srv")).stdout)[0]["NetworkSettings"]["Networks"]["front"]["IPAddress"]
        for network in ("back", "bridge"):
            result = yield self.ross("run", "--rm", "--network", network, "busybox", "sh", "-c",
                                     f"echo x | nc -w 2 {address} 80 && echo reached")
            self.assertNotIn(b"reached", result.stdout, network)
        result = yield self.ross("run", "--rm", "--network", "back", "busybox", "nslookup", "srv", gateway)
        self.assertNotIn(address.encode(), result.stdout)

    @inlineCallbacks
    def test_own_dns_servers(self) -> Any:
        """
        --dns on a user network keeps the network's server in resolv.conf:
        the network's names still resolve, and the other names go to the
        container's servers (docker's embedded DNS forwards them so); a
        container without --dns, on the same network, keeps the host's.
        """
        from twisted.internet import reactor as global_reactor
        from twisted.names import dns, hosts, server

        reactor: Any = global_reactor
        hosts_file = self.mktemp()
        with open(hosts_file, "w") as f:
            f.write("192.0.2.77 upstream.test\n")
        # On port 53 of a loopback address of this worker's own (the
        # daemon forwards from the host's namespace).
        upstream_address = f"127.53.{os.getpid() % 250}.53"
        factory = server.DNSServerFactory(clients=[hosts.Resolver(file=hosts_file)])
        port = reactor.listenUDP(53, dns.DNSDatagramProtocol(factory), interface=upstream_address)
        self.addCleanup(port.stopListening)
        yield self.create("front")
        result = yield self.ross("run", "-d", "--name", "srv", "--network", "front", "busybox", "sh", "-c", HTTPD)
        self.assertEqual(result.returncode, 0, result.stderr)
        gateway = json.loads((yield self.ross("network", "inspect", "front")).stdout)[0]["IPAM"]["Config"][0]["Gateway"]
        result = yield self.ross("run", "--rm", "--network", "front", "--dns", upstream_address, "--dns-search",
                                 "a.test", "busybox", "sh", "-c", "cat /etc/resolv.conf; "
                                 "wget -q -O- http://srv/index.html; nslookup -type=a upstream.test")
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertTrue(result.stdout.startswith(f"nameserver {gateway}\nsearch a.test\nhello\n".encode()),
                        result.stdout)
        self.assertIn(b"192.0.2.77", result.stdout)
        result = yield self.ross("run", "--rm", "--network", "front", "busybox", "nslookup", "-type=a",
                                 "upstream.test")
        self.assertNotIn(b"192.0.2.77", result.stdout)

    @inlineCallbacks
    def test_internal(self) -> Any:
        """
        An --internal network: its containers reach each other by name and
        nothing beyond (no forwarding out, no NAT); ports cannot be
        published on it; inspect says so.
        """
        subnet = free_subnet()
        result = yield self.ross("network", "create", "--internal", "--subnet", subnet, "inner")
        self.assertEqual(result.returncode, 0, result.stderr)
        info = json.loads((yield self.ross("network", "inspect", "inner")).stdout)[0]
        self.assertTrue(info["Internal"])
        result = yield self.ross("run", "-d", "--name", "peer", "--network", "inner", "busybox", "sh", "-c", HTTPD)
        self.assertEqual(result.returncode, 0, result.stderr)
        result = yield self.ross("run", "-d", "--name", "out", "busybox", "sh", "-c", HTTPD)
        self.assertEqual(result.returncode, 0, result.stderr)
        outside = json.loads((yield self.ross("inspect", "out")).stdout)[0]["NetworkSettings"]["IPAddress"]
        result = yield self.ross("run", "--rm", "--network", "inner", "busybox", "sh", "-c",
                                 f"timeout 10 wget -q -O- http://peer/index.html; "
                                 f"timeout 1 wget -q -O- http://{outside}/index.html && echo reached")
        self.assertEqual(result.stdout, b"hello\n", result.stderr)
        ruleset = yield deferToThread(subprocess.run, ["nft", "list", "table", "inet", self.daemon.network.table],
                                      capture_output=True, text=True, timeout=30)
        self.assertNotIn(f"ip saddr {subnet}", ruleset.stdout)
        result = yield self.ross("run", "--rm", "--network", "inner", "-p", "80", "busybox", "true")
        self.assertEqual(result.returncode, 125)
        self.assertIn(b"network inner is internal: ports cannot be published on it", result.stderr)

    @inlineCallbacks
    def test_static_address_connect_disconnect(self) -> Any:
        """
        --ip gives a fixed address (taken addresses refused); connect adds
        an interface and aliases at once, disconnect takes them away;
        removing a network in use is refused.
        """
        subnet = yield self.create("one")
        yield self.create("two")
        fixed = str(ipaddress.IPv4Network(subnet)[50])
        result = yield self.ross("run", "-d", "--name", "ca", "--network", "one", "--ip", fixed, "busybox", "sleep", "600")
        self.assertEqual(result.returncode, 0, result.stderr)
        result = yield self.ross("exec", "ca", "ip", "-o", "-4", "addr", "show", "eth0")
        self.assertIn(f"inet {fixed}/24".encode(), result.stdout)
        result = yield self.ross("run", "--rm", "--network", "one", "--ip", fixed, "busybox", "true")
        self.assertEqual(result.returncode, 125)
        self.assertIn(f"Address already in use: {fixed}".encode(), result.stderr)
        result = yield self.ross("run", "--rm", "--network", "one", "--ip", "192.0.2.200", "busybox", "true")
        self.assertIn(b"does not belong to the network's subnet", result.stderr)

        result = yield self.ross("network", "connect", "--alias", "db", "two", "ca")
        self.assertEqual(result.returncode, 0, result.stderr)
        result = yield self.ross("exec", "ca", "ip", "-o", "-4", "addr", "show", "eth1")
        self.assertEqual(result.returncode, 0, result.stderr)
        result = yield self.ross("run", "--rm", "--network", "two", "busybox", "sh", "-c", "ping -c 1 -W 2 db")
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        result = yield self.ross("network", "connect", "two", "ca")
        self.assertIn(b"already exists in network two", result.stderr)
        result = yield self.ross("network", "inspect", "two")
        self.assertEqual([c["Name"] for c in json.loads(result.stdout)[0]["Containers"].values()], ["ca"])

        result = yield self.ross("network", "rm", "one")
        self.assertEqual(result.returncode, 1)
        self.assertIn(b"error while removing network: network one", result.stderr)
        self.assertIn(b"has active endpoints", result.stderr)

        result = yield self.ross("network", "disconnect", "two", "ca")
        self.assertEqual(result.returncode, 0, result.stderr)
        result = yield self.ross("exec", "ca", "ls", "/sys/class/net")
        self.assertEqual(sorted(result.stdout.split()), [b"eth0", b"lo"])
        result = yield self.ross("network", "disconnect", "two", "ca")
        self.assertIn(b"is not connected to network two", result.stderr)
        result = yield self.ross("network", "connect", "nosuch", "ca")
        self.assertIn(b"network nosuch not found", result.stderr)
        result = yield self.ross("rm", "-f", "ca")
        self.assertEqual(result.returncode, 0, result.stderr)
        result = yield self.ross("network", "prune", "-f")
        self.assertEqual(result.stdout.decode().splitlines(), ["Deleted Networks:", "one", "two"])


def bridge_addresses(name: str, version: int = 4) -> list[str]:
    """
    The IPv4 (or IPv6, not link-local) addresses (CIDR) on link C{name}.
    """
    out = subprocess.run(["ip", "-o", f"-{version}", "addr", "show", "dev", name, "scope", "global"],
                         capture_output=True, text=True, timeout=30).stdout
    return [line.split()[3] for line in out.splitlines()]


class FreshRootTests(TestCase):
    """
    A daemon with a fresh --root on a host where its bridge exists already.
    """

    timeout = 120

    @inlineCallbacks
    def test_two_daemons_choose_apart(self) -> Any:
        """
        Two daemons on one host making networks at the same moment, each
        left to choose their subnets, never choose the same one: each
        chooses holding the host's subnet lock, and sees the routes of
        the bridges the other made.
        """
        daemons = [InProcessDaemon(self), InProcessDaemon(self)]
        for d in daemons:
            yield d.start()
        wanted = [(d, f"apart{i}") for i in range(3) for d in daemons]
        made = yield gatherResults([Deferred.fromCoroutine(d.engine.network.create_network(name))
                                    for d, name in wanted], consumeErrors=True)
        for d, name in wanted:
            yield Deferred.fromCoroutine(d.engine.network.remove_network(name))
        subnets = [n.subnet for n in made]
        self.assertEqual(len(set(subnets)), len(wanted), subnets)

    @inlineCallbacks
    def test_adopts_the_bridge(self) -> Any:
        """
        A fresh root adopts the existing bridge's subnet and gateway instead
        of stacking a second address on it; one given with --bridge-subnet
        replaces the bridge's address.
        """
        first = test_network("first")
        a = InProcessDaemon(self, network=first)
        yield a.start()
        # Stopped without the purge: the bridge stays, as after a daemon
        # whose root was thrown away.
        yield a.daemon.stopService()
        gateway = f"{ipaddress.IPv4Network(first.subnet)[1]}/{ipaddress.IPv4Network(first.subnet).prefixlen}"
        self.assertEqual(bridge_addresses(first.bridge), [gateway])
        b = InProcessDaemon(self, network=attrs.evolve(first, subnet="", table=test_network("second").table))
        yield b.start()
        default = b.engine.network.lookup("bridge")
        self.assertEqual((default.bridge, default.subnet, default.gateway),
                         (first.bridge, first.subnet, gateway.split("/")[0]))
        self.assertEqual(bridge_addresses(first.bridge), [gateway])
        yield b.daemon.stopService()
        other = test_network("third")
        c = InProcessDaemon(self, network=attrs.evolve(first, subnet=other.subnet, table=other.table))
        yield c.start()
        self.assertEqual(bridge_addresses(first.bridge),
                         [f"{ipaddress.IPv4Network(other.subnet)[1]}/{ipaddress.IPv4Network(other.subnet).prefixlen}"])

    @inlineCallbacks
    def test_bridge_in_use_refused(self) -> Any:
        """
        A daemon whose bridge another running daemon uses refuses to start,
        naming that daemon, and leaves the bridge as it was.
        """
        a = InProcessDaemon(self)
        yield a.start()
        before = bridge_addresses(a.network.bridge)
        b = DaemonProcess(extra=["--bridge-name", a.network.bridge])
        self.addCleanup(b.cleanup)
        b.spawn()
        assert b.process is not None
        yield deferToThread(b.process.wait, 60)
        # The holder here is this test process, without a --root.
        self.assertIn(f"daemon failed to start: bridge {a.network.bridge} is in use by another Ross daemon "
                      f"(pid {os.getpid()}): stop that daemon", b.read_log())
        self.assertEqual(bridge_addresses(a.network.bridge), before)
        # Its own table is not the only claim: the table is held too.
        c = DaemonProcess(extra=["--nft-table", a.network.table])
        self.addCleanup(c.cleanup)
        c.spawn()
        assert c.process is not None
        yield deferToThread(c.process.wait, 60)
        self.assertIn(f"nftables table {a.network.table} is in use by another Ross daemon", c.read_log())
        # However many daemons asked before, the next one is told who holds
        # it (the holder takes their connections off its backlog).
        def refusals() -> set[str]:
            told = set()
            for _ in range(100):
                try:
                    claim("bridge", a.network.bridge).close()
                except FailedPrecondition as e:
                    told.add(str(e).split(":")[0])
            return told

        told = yield deferToThread(refusals)
        self.assertEqual(told, {f"bridge {a.network.bridge} is in use by another Ross daemon (pid {os.getpid()})"})
