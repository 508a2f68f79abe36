"""
IPv6 and dual-stack networking for real. Each host is a private network
namespace (ross.testing.netns) with a daemon of its own (--ipv6): IPv6
forwarding, which Ross turns on as dockerd does, is a setting of the whole
host. Every test runs on a bare host (br_netfilter off: the kernel
publishes [::1] itself) and on hosts whose firewall drops forwarded
traffic (dockerd's iptables and ip6tables FORWARD DROP with br_netfilter,
nft and legacy backends; an nftables firewall that also drops input),
where the daemon answers [::1] itself.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from ross.test.integration.test_firewall import NFT_FIREWALL, docker_rules
from ross.test.integration.test_network import published_rules
from ross.testing.daemon import DaemonProcess
from ross.testing.images import docker_archive
from ross.testing.netns import PrivateHost, Where
from ross.testing.probes import compile_probe

HTTPD = "echo hello > /index.html && exec httpd -f -p 80 -h /"
# The default bridge's IPv6 subnet (--fixed-cidr-v6).
DEFAULT6 = ipaddress.IPv6Network("fd0e:ff:1::/64")
USER4, USER6 = "10.77.0.0/24", ipaddress.IPv6Network("fd0e:ff:77::/64")
OTHER4, OTHER6 = "10.78.0.0/24", "fd0e:ff:78::/64"
# Bounded by timeout(1): busybox's own wget -T crashes here.
GET = ["timeout", "5", "wget", "-q", "-O-"]
HOST_GET = ["busybox", "timeout", "5", "busybox", "wget", "-q", "-O-"]

# rawudp6 IFNAME DST_MAC SRC_IP DST_IP PORT PAYLOAD: one UDP datagram made by
# hand and sent as an Ethernet frame to DST_MAC, so that the sender's own
# routing (::1 is its own loopback) has no say: CVE-2020-8558 in IPv6.
RAW_UDP6 = r"""
#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <netinet/ip6.h>
#include <netinet/udp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

static unsigned long sum16(const unsigned char *p, size_t len, unsigned long sum) {
    for (; len > 1; len -= 2, p += 2) sum += (p[0] << 8) | p[1];
    if (len) sum += p[0] << 8;
    return sum;
}

int main(int argc, char **argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: rawudp6 IFNAME DST_MAC SRC_IP DST_IP PORT PAYLOAD\n");
        return 2;
    }
    int s = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_IPV6));
    if (s < 0) { perror("socket"); return 1; }
    struct ifreq hw = {0};
    strncpy(hw.ifr_name, argv[1], IFNAMSIZ - 1);
    if (ioctl(s, SIOCGIFHWADDR, &hw) < 0) { perror("ioctl"); return 1; }
    unsigned char dst[6];
    if (sscanf(argv[2], "%hhx:%hhx:%hhx:%hhx:%hhx:%hhx", dst, dst + 1, dst + 2, dst + 3, dst + 4, dst + 5) != 6) {
        fprintf(stderr, "bad MAC %s\n", argv[2]);
        return 2;
    }
    size_t payload = strlen(argv[6]);
    unsigned char frame[1500] = {0};
    if (payload > sizeof frame - 62) return 2;
    struct ether_header *eth = (struct ether_header *)frame;
    struct ip6_hdr *ip = (struct ip6_hdr *)(frame + 14);
    struct udphdr *udp = (struct udphdr *)(frame + 54);
    memcpy(eth->ether_dhost, dst, 6);
    memcpy(eth->ether_shost, hw.ifr_hwaddr.sa_data, 6);
    eth->ether_type = htons(ETH_P_IPV6);
    ip->ip6_flow = htonl(6u << 28);
    ip->ip6_plen = htons(8 + payload);
    ip->ip6_nxt = IPPROTO_UDP;
    ip->ip6_hlim = 64;
    if (inet_pton(AF_INET6, argv[3], &ip->ip6_src) != 1 || inet_pton(AF_INET6, argv[4], &ip->ip6_dst) != 1) {
        fprintf(stderr, "bad address\n");
        return 2;
    }
    udp->source = htons(40000);
    udp->dest = htons(atoi(argv[5]));
    udp->len = htons(8 + payload);
    memcpy(frame + 62, argv[6], payload);
    unsigned long sum = sum16((unsigned char *)&ip->ip6_src, 32, 0) + 8 + payload + IPPROTO_UDP;
    sum = sum16((unsigned char *)udp, 8 + payload, sum);
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    udp->check = htons((unsigned short)~sum ? (unsigned short)~sum : 0xffff);
    struct sockaddr_ll to = {0};
    to.sll_family = AF_PACKET;
    to.sll_protocol = htons(ETH_P_IPV6);
    to.sll_ifindex = if_nametoindex(argv[1]);
    to.sll_halen = 6;
    memcpy(to.sll_addr, dst, 6);
    if (sendto(s, frame, 62 + payload, 0, (struct sockaddr *)&to, sizeof to) < 0) { perror("sendto"); return 1; }
    return 0;
}
"""

# udpecho PORT: answers every datagram with its payload, on IPv4 and IPv6.
UDP_ECHO = r"""
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>

int main(int argc, char **argv) {
    int s = socket(AF_INET6, SOCK_DGRAM, 0), off = 0;
    struct sockaddr_in6 at = {0};
    at.sin6_family = AF_INET6;
    at.sin6_port = htons(atoi(argv[1]));
    setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off);
    if (bind(s, (struct sockaddr *)&at, sizeof at) < 0) { perror("bind"); return 1; }
    for (;;) {
        char buf[2048];
        struct sockaddr_in6 from;
        socklen_t len = sizeof from;
        ssize_t n = recvfrom(s, buf, sizeof buf, 0, (struct sockaddr *)&from, &len);
        if (n >= 0) sendto(s, buf, n, 0, (struct sockaddr *)&from, len);
    }
}
"""

# Run in the private host: sends C{payload} to each (address, port) of
# argv and prints what comes back within 5 s (nothing: an empty line).
UDP_ASK = """
import socket, sys
for target in sys.argv[1:]:
    host, port = target.rsplit(":", 1)
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(5)
    s.sendto(b"ping", (host.strip("[]"), int(port)))
    try:
        print(s.recv(100).decode())
    except OSError:
        print()
"""

# Run in the private host: listens on UDP [::1]:argv[1] and [argv[2]]:argv[3]
# and prints each datagram received as "address payload", for 10 s at most.
UDP_LISTEN = """
import select, socket, sys, time
loopback = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
loopback.bind(("::1", int(sys.argv[1])))
control = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
control.bind((sys.argv[2], int(sys.argv[3])))
print("ready", flush=True)
# The loopback datagram is sent first: once the control one is in, a
# second more for one that came by a slower way, then done.
deadline = time.monotonic() + 10
while time.monotonic() < deadline:
    ready, _, _ = select.select([loopback, control], [], [], deadline - time.monotonic())
    for s in ready:
        print(s.getsockname()[0], s.recv(100).decode(), flush=True)
        if s is control:
            deadline = min(deadline, time.monotonic() + 1)
"""

# Run on the outside: accepts one TCP connection on [::]:7777 and answers
# with the address it came from.
SEEN_SERVER = """
import socket
s = socket.socket(socket.AF_INET6); s.bind(("::", 7777)); s.listen(1); s.settimeout(60)
print("ready", flush=True)
c, peer = s.accept(); c.sendall(b"seen " + peer[0].encode() + b"\\n"); c.close()
"""


class IPv6Host:
    """
    The tests, on a private host whose firewall C{setup} (shell, run in it)
    sets; C{filtering}: br_netfilter hands bridged traffic to the host's
    chains, as where dockerd runs.
    """

    setup = ""
    filtering = True
    # Shell that opens UDP ports 5301 and 5302 to containers in the host's
    # firewall (empty: it does not filter input).
    open_input = ""

    timeout = 300

    def setUp(self) -> Any:
        return deferToThread(self._set_up)

    def _set_up(self) -> None:
        case: Any = self
        self.host = PrivateHost()
        case.addCleanup(self.host.destroy)
        self.host.create()
        self.host.bridge_filtering(self.filtering)
        self.host.run("sh", "-c", self.setup)
        self.daemon = DaemonProcess(netns=self.host.name, extra=["--ipv6", "--fixed-cidr-v6", str(DEFAULT6)])
        case.addCleanup(self.daemon.cleanup)
        case.addCleanup(self._remove_containers)
        self.daemon.start()
        self.ok("load", "-i", str(docker_archive(self.daemon.base / "busybox.tar").path))

    def _remove_containers(self) -> None:
        if self.daemon.process is not None and self.daemon.process.poll() is None:
            ids = self.daemon.ross("ps", "-aq").stdout.decode().split()
            if ids:
                self.daemon.ross("rm", "-f", *ids)

    def ok(self, *args: str) -> bytes:
        case: Any = self
        result = self.daemon.ross(*args)
        case.assertEqual(result.returncode, 0, (args, result.stderr))
        return bytes(result.stdout)

    def refused(self, message: str, *args: str) -> None:
        case: Any = self
        result = self.daemon.ross(*args)
        case.assertNotEqual(result.returncode, 0, args)
        case.assertIn(message.encode(), result.stderr, args)

    def settings(self, name: str) -> dict[str, Any]:
        return dict(json.loads(self.ok("inspect", name))[0]["NetworkSettings"])

    def host_get(self, url: str, where: Where = "host") -> str:
        """
        The body at C{url}, fetched from the private host or the outside
        (empty when it does not answer), retried while the server starts.
        """
        deadline = time.monotonic() + 20
        while True:
            result = self.host.run(*HOST_GET, url, where=where, check=False)
            if result.returncode == 0 or time.monotonic() > deadline:
                return str(result.stdout)
            time.sleep(0.2)

    def host_python(self, script: str, *args: str) -> subprocess.Popen[str]:
        """
        C{script} running in the private host, its output piped; killed at
        cleanup.
        """
        case: Any = self
        process = subprocess.Popen(self.host.command(sys.executable, "-c", script, *args), stdout=subprocess.PIPE,
                                   text=True)
        case.addCleanup(process.wait, 10)
        case.addCleanup(process.kill)
        return process

    def test_dual_stack_bridge(self) -> Any:
        return deferToThread(self._dual_stack_bridge)

    def _dual_stack_bridge(self) -> None:
        """
        A container on the dual-stack default bridge: an IPv6 address of
        the daemon's --fixed-cidr-v6 on eth0 with the default route via the
        bridge, in /etc/hosts and inspect as docker shows it; other
        containers reach it over IPv6, it reaches the outside through NAT66;
        a published port answers on [::1], on the host's IPv6 address (from
        the host and from outside) and on IPv4, TCP and UDP alike; ports
        published live on [::1] work at once; all of it still once the
        daemon has restarted; the rules go with it.
        """
        case: Any = self
        host = self.host
        echo = compile_probe("udpecho", UDP_ECHO)
        self.ok("run", "-d", "--name", "web", "-p", "8080:80", "-p", "5300:5300/udp", "-v", f"{echo}:/udpecho:ro",
                "busybox", "sh", "-c", f"/udpecho 5300 & {HTTPD}")
        ns = self.settings("web")
        address6 = ns["GlobalIPv6Address"]
        case.assertIn(ipaddress.IPv6Address(address6), DEFAULT6)
        case.assertEqual((ns["IPv6Gateway"], ns["GlobalIPv6PrefixLen"]), (str(DEFAULT6[1]), 64))
        case.assertEqual(ns["Networks"]["bridge"]["GlobalIPv6Address"], address6)
        case.assertEqual(ns["Ports"]["80/tcp"], [{"HostIp": "0.0.0.0", "HostPort": "8080"},
                                                 {"HostIp": "::", "HostPort": "8080"}])
        inside = self.ok("exec", "web", "sh", "-c", "ip -6 -o addr show eth0; ip -6 route; cat /etc/hosts").decode()
        case.assertIn(f"inet6 {address6}/64", inside)
        case.assertIn(f"default via {DEFAULT6[1]} dev eth0", inside)
        case.assertIn(f"\n{address6}\t", inside)
        case.assertEqual(self.ok("port", "web", "80").decode().splitlines(), ["0.0.0.0:8080", "[::]:8080"])
        case.assertIn("0.0.0.0:8080->80/tcp, [::]:8080->80/tcp", self.ok("ps").decode())

        case.assertEqual(self.ok("run", "--rm", "busybox", *GET, f"http://[{address6}]/index.html"), b"hello\n")
        # Where br_netfilter sees bridged IPv6, [::1] is the daemon's to
        # answer; elsewhere the kernel's.
        table = host.run("nft", "list", "table", "inet", self.daemon.network.table).stdout
        case.assertEqual("ip6 daddr ::1 return" in table, self.filtering, table)
        for url in ("http://[::1]:8080/index.html", f"http://[{host.address6}]:8080/index.html",
                    "http://127.0.0.1:8080/index.html"):
            case.assertEqual(self.host_get(url), "hello\n", url)
        case.assertEqual(self.host_get(f"http://[{host.address6}]:8080/index.html", where="remote"), "hello\n")
        asked = host.run(sys.executable, "-c", UDP_ASK, "[::1]:5300", f"[{host.address6}]:5300", "127.0.0.1:5300")
        case.assertEqual(asked.stdout.splitlines(), ["ping", "ping", "ping"])

        # Out through NAT66: the outside sees the host's address and has no
        # route back to the containers' subnet.
        server = subprocess.Popen(host.command(sys.executable, "-c", SEEN_SERVER, where="remote"),
                                  stdout=subprocess.PIPE, text=True)
        case.addCleanup(server.wait, 10)
        case.addCleanup(server.kill)
        assert server.stdout is not None
        case.assertEqual(server.stdout.readline(), "ready\n")
        out = self.ok("run", "--rm", "busybox", "sh", "-c", f"nc {host.remote_address6} 7777 </dev/null")
        case.assertEqual(out, f"seen {host.address6}\n".encode())

        # Live: a port published on [::1] alone answers there, not on IPv4.
        self.ok("port", "add", "web", "[::1]:8081:80")
        case.assertEqual(self.host_get("http://[::1]:8081/index.html"), "hello\n")
        refused = host.run(*HOST_GET, "http://127.0.0.1:8081/index.html", check=False)
        case.assertNotEqual(refused.returncode, 0)
        self.ok("port", "rm", "web", "[::1]:8081:80")
        refused = host.run(*HOST_GET, "http://[::1]:8081/index.html", check=False)
        case.assertNotEqual(refused.returncode, 0)

        case.assertIn(self.daemon.stop(), (0, -15))
        self.daemon.start()
        case.assertEqual(self.settings("web")["GlobalIPv6Address"], address6)
        case.assertEqual(self.host_get("http://[::1]:8080/index.html"), "hello\n", self.daemon.read_log()[-3000:])
        asked = host.run(sys.executable, "-c", UDP_ASK, "[::1]:5300")
        case.assertEqual(asked.stdout.splitlines(), ["ping"])
        self.ok("run", "-d", "--name", "next", "busybox", "sleep", "600")
        case.assertNotEqual(self.settings("next")["GlobalIPv6Address"], address6)

        self.ok("rm", "-f", "web", "next")
        table = host.run("nft", "list", "table", "inet", self.daemon.network.table).stdout
        case.assertEqual(published_rules(table), 0, table)
        refused = host.run(*HOST_GET, "http://[::1]:8080/index.html", check=False)
        case.assertNotEqual(refused.returncode, 0)

    def test_user_network(self) -> Any:
        return deferToThread(self._user_network)

    def _user_network(self) -> None:
        """
        network create --ipv6 with an IPv4 and an IPv6 subnet: inspect shows
        both; containers get addresses of both (--ip6 a fixed one, never one
        another holds, even when started all at once), resolve each other's
        names to both (A and AAAA), and other networks cannot reach them;
        connect gives an IPv6 interface at once; bad or taken subnets and
        addresses are refused; the daemon leaves nothing once its networks
        are gone.
        """
        case: Any = self
        gateway6 = str(USER6[0xFE])
        self.ok("network", "create", "--ipv6", "--subnet", str(USER6), "--subnet", USER4,
                "--gateway", gateway6, "app")
        info = json.loads(self.ok("network", "inspect", "app"))[0]
        case.assertTrue(info["EnableIPv6"])
        case.assertEqual(info["IPAM"]["Config"], [{"Subnet": USER4, "Gateway": str(ipaddress.ip_network(USER4)[1])},
                                                  {"Subnet": str(USER6), "Gateway": gateway6}])
        fixed = str(USER6[0x50])
        self.ok("run", "-d", "--name", "peer", "--network", "app", "--ip6", fixed, "--network-alias", "www",
                "busybox", "sh", "-c", HTTPD)
        peer = self.settings("peer")["Networks"]["app"]
        case.assertEqual((peer["GlobalIPv6Address"], peer["IPv6Gateway"]), (fixed, gateway6))
        members = json.loads(self.ok("network", "inspect", "app"))[0]["Containers"]
        case.assertEqual([c["IPv6Address"] for c in members.values()], [f"{fixed}/64"])

        looked = self.ok("run", "--rm", "--network", "app", "busybox", "sh", "-c",
                         "nslookup -type=AAAA www; nslookup -type=A peer").decode()
        case.assertIn(f"Address: {fixed}", looked)
        case.assertIn(f"Address: {peer['IPAddress']}", looked)
        case.assertEqual(self.ok("run", "--rm", "--network", "app", "busybox", *GET, f"http://[{fixed}]/index.html"),
                         b"hello\n")
        self.ok("run", "--rm", "--network", "app", "busybox", "ping6", "-c", "1", "-W", "3", "peer")

        self.refused(f"Address already in use: {fixed}", "run", "--rm", "--network", "app", "--ip6", fixed,
                     "busybox", "true")
        self.refused("does not belong to the network's subnet", "run", "--rm", "--network", "app", "--ip6",
                     "fd0e:ff:99::5", "busybox", "true")
        self.refused("not an IPv6 address", "run", "--rm", "--network", "app", "--ip6", "10.77.0.9", "busybox", "true")
        self.refused("an IPv6 subnet needs IPv6 on the network", "network", "create", "--subnet", OTHER6, "nov6")
        self.refused("Pool overlaps with other one on this address space", "network", "create", "--ipv6",
                     "--subnet", "fd0e:ff:77::/48", "clash")
        self.ok("network", "create", "--subnet", OTHER4, "plain")
        self.refused("network plain has no IPv6", "run", "--rm", "--network", "plain", "--ip6",
                     str(ipaddress.ip_network(OTHER6)[5]), "busybox", "true")
        self.refused("network plain has no IPv6", "run", "--rm", "--network", "plain", "-p", "[::1]:9000:80",
                     "busybox", "true")

        # Another IPv6 network, its subnet chosen: isolated from app, and
        # connect gives a container an interface there at once.
        self.ok("network", "create", "--ipv6", "other")
        chosen = json.loads(self.ok("network", "inspect", "other"))[0]["IPAM"]["Config"][1]["Subnet"]
        case.assertEqual((ipaddress.ip_network(chosen).prefixlen, chosen[:2]), (64, "fd"))
        result = self.daemon.ross("run", "--rm", "--network", "other", "busybox", "sh", "-c",
                                  f"timeout 1 wget -q -O- http://[{fixed}]/index.html && echo reached")
        case.assertNotIn(b"reached", result.stdout)
        self.ok("run", "-d", "--name", "roamer", "--network", "other", "busybox", "sleep", "600")
        second = str(USER6[0x60])
        self.ok("network", "connect", "--ip6", second, "app", "roamer")
        case.assertIn(f"inet6 {second}/64".encode(), self.ok("exec", "roamer", "ip", "-6", "-o", "addr", "show", "eth1"))
        case.assertEqual(self.ok("exec", "roamer", *GET, f"http://[{fixed}]/index.html"), b"hello\n")

        names = [f"c{i}" for i in range(6)]
        with ThreadPoolExecutor(len(names)) as pool:
            results = list(pool.map(lambda n: self.daemon.ross("run", "-d", "--name", n, "--network", "app",
                                                               "busybox", "sleep", "600"), names))
        for r in results:
            case.assertEqual(r.returncode, 0, r.stderr)
        taken = [self.settings(n)["Networks"]["app"]["GlobalIPv6Address"] for n in names + ["peer", "roamer"]]
        case.assertEqual(len(set(taken)), len(taken), taken)

        bridges = [json.loads(self.ok("network", "inspect", n))[0]["Options"]["com.docker.network.bridge.name"]
                   for n in ("bridge", "app", "other")]
        self.ok("rm", "-f", "peer", "roamer", *names)
        self.ok("network", "rm", "app", "other", "plain")
        links = self.host.run("ip", "-o", "link").stdout
        case.assertNotIn(bridges[1], links)
        case.assertNotIn(bridges[2], links)
        # twistd re-raises SIGTERM after a clean shutdown.
        case.assertIn(self.daemon.stop(), (0, -15))
        self.daemon.purge()
        rules = self.host.run("sh", "-c", "nft list ruleset; ip6tables-nft-save; iptables-nft-save; "
                                          "ip6tables-legacy-save; iptables-legacy-save; ip -6 route show table local")
        case.assertNotIn(self.daemon.network.table, rules.stdout)
        case.assertNotIn("ROSS-", rules.stdout)
        case.assertNotIn('"ross:', rules.stdout.replace('"ross:own"', ""))
        case.assertNotIn(bridges[0], rules.stdout)

    def test_turned_on_later_and_adopted(self) -> Any:
        return deferToThread(self._turned_on_later_and_adopted)

    def _turned_on_later_and_adopted(self) -> None:
        """
        IPv6 turned on for the default bridge while a container runs on it:
        that one keeps its IPv4 and its ports (IPv6 ones refused, it has no
        address to take them) until it restarts; containers started from
        then on get both. A daemon with a fresh root and --ipv6 alone adopts
        the IPv6 subnet the bridge has, as it adopts its IPv4 one.
        """
        case: Any = self
        daemon = self.daemon
        case.assertIn(daemon.stop(), (0, -15))
        daemon.extra = []
        daemon.start()
        self.ok("run", "-d", "--name", "web", "-p", "8080:80", "busybox", "sh", "-c", HTTPD)
        case.assertEqual(self.settings("web")["GlobalIPv6Address"], "")
        case.assertIn(daemon.stop(), (0, -15))
        daemon.extra = ["--ipv6", "--fixed-cidr-v6", str(DEFAULT6)]
        daemon.start()
        case.assertEqual(self.host_get("http://127.0.0.1:8080/index.html"), "hello\n")
        case.assertEqual(self.settings("web")["GlobalIPv6Address"], "")
        self.refused("restart it", "port", "add", "web", "[::1]:8081:80")
        self.ok("restart", "-t", "0", "web")
        case.assertIn(ipaddress.IPv6Address(self.settings("web")["GlobalIPv6Address"]), DEFAULT6)
        case.assertEqual(self.host_get("http://[::1]:8080/index.html"), "hello\n")
        self.ok("rm", "-f", "web")

        case.assertIn(daemon.stop(), (0, -15))
        fresh = DaemonProcess(netns=self.host.name, extra=["--ipv6"])
        fresh.network = daemon.network
        case.addCleanup(fresh.cleanup)
        fresh.start()
        info = json.loads(fresh.ross("network", "inspect", "bridge").stdout)[0]
        case.assertEqual(info["IPAM"]["Config"][1], {"Subnet": str(DEFAULT6), "Gateway": str(DEFAULT6[1])})
        case.assertIn(fresh.stop(), (0, -15))

    def test_host_loopback_unreachable(self) -> Any:
        return deferToThread(self._host_loopback_unreachable)

    def _host_loopback_unreachable(self) -> None:
        """
        A packet a container makes itself, to ::1 through the bridge, never
        reaches a service on the host's loopback (the kernel refuses ::1 on
        any link but lo, before Ross's rules, the local route for ::1 on the
        bridge or br_netfilter's NAT); the same packet to the gateway's
        address does, so the probe could send it.
        """
        case: Any = self
        probe = compile_probe("rawudp6", RAW_UDP6)
        gateway = str(DEFAULT6[1])
        # The host's own firewall lets both through: what stops the first is
        # not a rule of another manager.
        self.host.run("sh", "-c", self.open_input)
        listener = self.host_python(UDP_LISTEN, "5301", gateway, "5302")
        assert listener.stdout is not None
        case.assertEqual(listener.stdout.readline(), "ready\n")
        # The bridge's MAC changes as ports join it: asked from inside.
        script = (f"ping6 -c 1 -W 2 {gateway} >/dev/null; "
                  f"mac=$(ip -6 neigh show {gateway} | awk '{{for (i = 1; i < NF; i++) if ($i == \"lladdr\") "
                  f"print $(i + 1)}}'); "
                  f"me=$(ip -6 -o addr show eth0 scope global | awk '{{print $4}}' | cut -d/ -f1); "
                  f"/probe eth0 $mac $me ::1 5301 loopback && /probe eth0 $mac $me {gateway} 5302 control")
        result = self.daemon.ross("run", "--rm", "-v", f"{probe}:/probe:ro", "busybox", "sh", "-c", script)
        case.assertEqual(result.returncode, 0, result.stderr)
        out, _ = listener.communicate(timeout=30)
        case.assertEqual(out.splitlines(), [f"{gateway} control"])
        # Not for want of the route that publishing on [::1] needs.
        bridge = self.daemon.network.bridge
        case.assertIn(f"local ::1 dev {bridge}", self.host.run("ip", "-6", "route", "show", "table", "local").stdout)


class BareHostTests(IPv6Host, TestCase):
    """
    No firewall, br_netfilter off: the kernel publishes [::1] itself.
    """

    filtering = False


class DockerNftTests(IPv6Host, TestCase):
    """
    dockerd with iptables-nft and ip6tables-nft: FORWARD policy DROP in
    both, br_netfilter on.
    """

    setup = docker_rules("iptables-nft") + "\n" + docker_rules("ip6tables-nft")


class DockerLegacyTests(IPv6Host, TestCase):
    """
    dockerd with iptables-legacy and ip6tables-legacy.
    """

    setup = docker_rules("iptables-legacy") + "\n" + docker_rules("ip6tables-legacy")


class NftablesTests(IPv6Host, TestCase):
    """
    An nftables firewall (family inet) that drops by policy in input and
    forward: the neighbour discovery of containers included.
    """

    setup = f"nft -f - <<'EOF'\n{NFT_FIREWALL}\nEOF"
    open_input = "nft insert rule inet hostfw input udp dport { 5301, 5302 } accept"
