"""
Ross on hosts where other firewall managers run: dockerd's iptables
FORWARD DROP (nft and legacy backends) with br_netfilter, and an nftables
firewall that drops by policy. Each host is a private network namespace
(ross.testing.netns) with a daemon of its own in it, so the real host's
rules are never touched.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.testing import EventLoggingObserver
from twisted.internet.threads import deferToThread
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase

from ross.engine.network import firewall, rules
from ross.engine.reactors import engine_reactor
from ross.testing.daemon import DaemonProcess
from ross.testing.fakes import SynchronousReactor
from ross.testing.images import docker_archive
from ross.testing.netns import PrivateHost

HTTPD = "echo hello > /index.html && exec httpd -f -p 80 -h /"
# Another manager's bridge and a container of its own on it.
OTHER_BRIDGE, OTHER_ADDRESS, OTHER_GATEWAY = "dk0", "172.30.0.2", "172.30.0.1"
USER_SUBNET = "10.77.0.0/24"


def docker_rules(iptables: str) -> str:
    """
    What dockerd leaves in FORWARD (its policy DROP) for bridge dk0.
    """
    return "\n".join([
        f"{iptables} -P FORWARD DROP",
        f"{iptables} -N DOCKER-USER 2>/dev/null || true",
        f"{iptables} -F DOCKER-USER",
        f"{iptables} -A DOCKER-USER -j RETURN",
        f"{iptables} -I FORWARD 1 -j DOCKER-USER",
        f"{iptables} -A FORWARD -o dk0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        f"{iptables} -A FORWARD -i dk0 ! -o dk0 -j ACCEPT",
        f"{iptables} -A FORWARD -i dk0 -o dk0 -j ACCEPT",
    ])


RULESET = "nft list ruleset; iptables-nft-save; iptables-legacy-save"
NFT_FIREWALL = """
table inet hostfw {
  chain input {
    type filter hook input priority filter; policy drop;
    iif "lo" accept
    ct state established,related accept
    iifname "up0" icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept
  }
  chain forward {
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    iifname "dk0" accept
  }
}
"""


class UnitTests(TestCase):
    """
    The rules, rendered.
    """

    def test_rules(self) -> None:
        wanted = firewall.rules([firewall.Opening("rb0", "10.0.0.1"), firewall.Opening("rb1")],
                                bridges={"rb0", "rb1", "dk0", "br0"}, uplinks={"br0"})
        lines = [line for rule in wanted["forward"] for line in firewall.iptables_lines("C", rule)]
        self.assertEqual(lines, [
            "-A C -o rb0 -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
            "-A C -o rb1 -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
            "-A C -o rb0 -m conntrack --ctstate DNAT -j ACCEPT",
            "-A C -o rb1 -m conntrack --ctstate DNAT -j ACCEPT",
            # Another manager's bridge is left to the host's rules; one
            # that carries the default route is the way out.
            "-A C -i rb0 -o dk0 -j RETURN",
            "-A C -i rb0 -o rb1 -j RETURN",
            "-A C -i rb0 -j ACCEPT",
            "-A C -i rb1 -o dk0 -j RETURN",
            "-A C -i rb1 -o rb0 -j RETURN",
            "-A C -i rb1 -j ACCEPT",
        ])
        lines = [line for rule in wanted["input"] for line in firewall.iptables_lines("C", rule)]
        self.assertEqual(lines, [
            "-A C -i rb0 -d 10.0.0.1/32 -p udp -m udp --dport 53 -j ACCEPT",
            "-A C -i rb0 -d 10.0.0.1/32 -p tcp -m tcp --dport 53 -j ACCEPT",
            "-A C -i rb0 -m conntrack --ctstate DNAT -j ACCEPT",
            "-A C -i rb1 -m conntrack --ctstate DNAT -j ACCEPT",
        ])
        self.assertEqual(firewall.nft_expr(wanted["forward"][4]), [
            {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "rb0"}},
            {"match": {"op": "!=", "left": {"meta": {"key": "oifname"}}, "right": {"set": ["dk0", "rb1"]}}},
            {"accept": None},
        ])
        self.assertEqual(firewall.rules([], {"dk0"}, ()), {"forward": [], "input": []})
        # An internal network: within its bridge, and its DNS.
        internal = firewall.rules([firewall.Opening("rb2", "10.0.2.1", internal=True)], {"rb2"}, ())
        self.assertEqual([line for rule in internal["forward"] for line in firewall.iptables_lines("C", rule)],
                         ["-A C -i rb2 -o rb2 -j ACCEPT"])
        self.assertEqual(len(internal["input"]), 3)
        # IPv6: ip6tables get the rules of the networks with IPv6 only, and
        # the neighbour discovery their containers need.
        dual = firewall.rules([firewall.Opening("rb0", "10.0.0.1", ipv6=True), firewall.Opening("rb1")],
                              bridges={"rb0", "rb1"}, uplinks=())
        v6 = firewall.of_family(dual, "ip6")
        self.assertEqual([line for rule in v6["forward"] for line in firewall.iptables_lines("C", rule)], [
            "-A C -o rb0 -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
            "-A C -o rb0 -m conntrack --ctstate DNAT -j ACCEPT",
            "-A C -i rb0 -o rb1 -j RETURN",
            "-A C -i rb0 -j ACCEPT",
        ])
        self.assertEqual([line for rule in v6["input"] for line in firewall.iptables_lines("C", rule)], [
            "-A C -i rb0 -m conntrack --ctstate DNAT -j ACCEPT",
            "-A C -i rb0 -p ipv6-icmp -m icmp6 --icmpv6-type neighbour-solicitation -j ACCEPT",
            "-A C -i rb0 -p ipv6-icmp -m icmp6 --icmpv6-type neighbour-advertisement -j ACCEPT",
        ])
        self.assertEqual(firewall.nft_expr(v6["input"][1]), [
            {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "rb0"}},
            {"match": {"op": "==", "left": {"payload": {"protocol": "icmpv6", "field": "type"}},
                       "right": "nd-neighbor-solicit"}},
            {"accept": None},
        ])
        v4 = firewall.of_family(dual, "ip")
        self.assertFalse(any(rule.icmpv6 for rule in v4["input"]))
        self.assertEqual(len(v4["forward"]), 6)
        self.assertEqual(firewall.of_family(dual, "inet"), dual)
        self.assertEqual(firewall.iptables_chain("ross", "forward"), "ROSS-FWD-ross")
        self.assertLessEqual(len(firewall.iptables_chain("t" * 64, "forward")), 28)


class KeepingTests(TestCase):
    """
    What the daemon says of the other managers' chains it keeps its rules
    in, look after look (the looks scripted, the clock a fake one).
    """

    def test_rebuilt_while_looked_at(self) -> None:
        """
        A chain that a look made in the middle of its manager's rebuild did
        not find (its table deleted, not made again yet) is, once back
        without Ross's rules, one whose rules were put back: not a chain
        seen for the first time.
        """
        chain = firewall.ForeignChain("nftables", "inet hostfw", "forward", "drop")
        looks = iter([firewall.Survey(chains=(chain,), changed=(chain,)),
                      firewall.Survey(),
                      firewall.Survey(chains=(chain,), changed=(chain,))])
        self.patch(firewall, "sync", lambda table, openings: next(looks))
        said = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        reactor = SynchronousReactor()
        packets = rules.PacketRules(engine_reactor(reactor), "t", {}, {})
        self.successResultOf(Deferred.fromCoroutine(packets._sync_firewall()))
        packets.start()
        reactor.advance(rules.FIREWALL_RECHECK)
        reactor.advance(rules.FIREWALL_RECHECK)
        self.successResultOf(packets.stop())
        self.assertEqual([e["log_format"] for e in said if "Ross" in e.get("log_format", "")], [
            "firewall chain {chain} can drop Ross's traffic: Ross's bridges get accept rules there",
            "put Ross's accept rules back in {chain}",
        ])


class HostLinksTests(TestCase):
    def test_bridges_and_uplinks(self) -> Any:
        """
        The firewall's look at the host finds its bridges (from a dump the
        kernel filters by kind: no veth, however many) and the link its
        default route leaves by.
        """
        host = PrivateHost()
        self.addCleanup(deferToThread, host.destroy)

        def look() -> Any:
            host.create()
            for bridge in ("rossbra", "rossbrb"):
                host.run("ip", "link", "add", bridge, "type", "bridge")
            for i in range(40):
                host.run("ip", "link", "add", f"rossv{i}", "type", "veth", "peer", "name", f"rossp{i}")
            host.run("ip", "link", "set", "rossv0", "master", "rossbra")
            script = ("import json; from ross.engine.network import netlink; "
                      "print(json.dumps([sorted(s) for s in netlink.bridges_and_uplinks()]))")
            return json.loads(host.run(sys.executable, "-c", script, timeout=60).stdout)

        d = deferToThread(look)
        d.addCallback(self.assertEqual, [["rossbra", "rossbrb"], [PrivateHost.uplink]])
        return d


class FirewalledHost:
    """
    The README's networking tour on a private host whose firewall is set
    by C{setup} (shell, run in it); C{rebuild} is another manager rebuilding
    its rules, which takes Ross's away.
    """

    setup = ""
    rebuild = ""
    backend = ""

    timeout = 240

    def setUp(self) -> Any:
        return deferToThread(self._set_up)

    def _set_up(self) -> None:
        self.host = PrivateHost()
        other = f"rossd{self.host.name[-6:]}"
        case: Any = self
        case.addCleanup(self.host.destroy, other)
        self.host.create()
        self.host.link(OTHER_BRIDGE, other, OTHER_ADDRESS, OTHER_GATEWAY)
        self.other = other
        self.host.run("sh", "-c", self.setup)
        self.daemon = DaemonProcess(netns=self.host.name)
        case.addCleanup(self.daemon.cleanup)
        case.addCleanup(self._remove_containers)
        self.daemon.start()
        archive = docker_archive(self.daemon.base / "busybox.tar")
        self.ok("load", "-i", str(archive.path))

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

    def address_of(self, name: str, network: str = "bridge") -> str:
        return str(json.loads(self.ok("inspect", name))[0]["NetworkSettings"]["Networks"][network]["IPAddress"])

    def ruleset(self) -> str:
        """
        The private host's rules, every backend.
        """
        return self.host.run("sh", "-c", RULESET).stdout

    def opened(self) -> bool:
        """
        Whether the host's chains hold accept rules of Ross's.
        """
        return any('"ross:' in line and "ross:own" not in line for line in self.ruleset().splitlines())

    def test_networking(self) -> Any:
        return deferToThread(self._networking)

    def _networking(self) -> None:
        case: Any = self
        host = self.host
        self.ok("run", "-d", "--name", "web", "-p", "8080:80", "busybox", "sh", "-c", HTTPD)
        web = self.address_of("web")
        # Container to container on the bridge (br_netfilter shows it to
        # the FORWARD chain).
        # Bounded by timeout(1): busybox's own wget -T crashes here.
        get = ["timeout", "5", "wget", "-q", "-O-"]
        host_get = ["busybox", "timeout", "5", "busybox", "wget", "-q", "-O-"]
        case.assertEqual(_retry(lambda: self.daemon.ross("run", "--rm", "busybox", *get, f"http://{web}/index.html")),
                         b"hello\n")
        # Out through NAT to the outside, which has no route back to the
        # bridge.
        served = self.daemon.base / "served"
        served.mkdir()
        (served / "file").write_text("outside\n")
        server = subprocess.Popen(host.command("busybox", "httpd", "-f", "-p", "7777", "-h", str(served),
                                               where="remote"))
        case.addCleanup(server.wait, 10)
        case.addCleanup(server.kill)
        url = f"http://{host.remote_address}:7777/file"
        case.assertEqual(_retry(lambda: self.daemon.ross("run", "--rm", "busybox", *get, url)), b"outside\n")
        # The published port, from outside and from the host itself.
        case.assertEqual(_retry(lambda: host.run(*host_get, f"http://{host.address}:8080/index.html",
                                                 where="remote", check=False)), "hello\n")
        case.assertEqual(host.run(*host_get, "http://127.0.0.1:8080/index.html").stdout, "hello\n")
        # And from the container itself (hairpin): br_netfilter DNATs it on
        # the bridge, back out of the port it came in by.
        case.assertEqual(self.ok("exec", "web", *get, f"http://{host.address}:8080/index.html"), b"hello\n")
        # Names on a user network: its DNS server answers on the gateway.
        self.ok("network", "create", "--subnet", USER_SUBNET, "app")
        self.ok("run", "-d", "--name", "peer", "--network", "app", "busybox", "sh", "-c", HTTPD)
        case.assertEqual(self.ok("run", "--rm", "--network", "app", "busybox", *get, "http://peer/index.html"),
                         b"hello\n")

        # Nothing opened for what is not Ross's: another manager's
        # container, and the containers' own addresses from outside. (On
        # these local links a connection let through answers within
        # milliseconds: a second is long enough to see none is.)
        other = subprocess.Popen(["ip", "netns", "exec", self.other, "busybox", "httpd", "-f", "-p", "80",
                                  "-h", str(served)])
        case.addCleanup(other.wait, 10)
        case.addCleanup(other.kill)
        result = self.daemon.ross("run", "--rm", "busybox", "sh", "-c",
                                  f"timeout 1 wget -q -O- http://{OTHER_ADDRESS}/file && echo reached")
        case.assertNotIn(b"reached", result.stdout)
        host.run("ip", "route", "add", "10.0.0.0/8", "via", host.address, where="remote")
        direct = host.run("busybox", "timeout", "1", "busybox", "wget", "-q", "-O-", f"http://{web}/index.html",
                          where="remote", check=False)
        case.assertNotEqual(direct.returncode, 0)
        case.assertNotIn("hello", direct.stdout)

        info = json.loads(self.ok("info", "--format", "json"))
        case.assertEqual(info["FirewallBackends"][0], f"nftables (table {self.daemon.network.table})")
        case.assertIn(self.backend, info["FirewallBackends"])
        case.assertIn(self.backend, " ".join(info["FirewallChains"]))
        case.assertEqual(info["FirewallProblems"], [])

        # Another manager rebuilds its chains, which takes Ross's rules
        # away: they come back, and the daemon says so (it logs only a
        # rule it found missing; checking the ruleset right after the
        # rebuild instead would race Ross's next look).
        case.assertTrue(self.opened())
        restored = "put Ross's accept rules back in"
        before = self.daemon.log.read_text().count(restored)
        host.run("sh", "-c", self.rebuild)
        _wait_for(lambda: self.daemon.log.read_text().count(restored) > before, 30)
        _wait_for(self.opened, 30)
        case.assertEqual(self.ok("run", "--rm", "busybox", *get, f"http://{web}/index.html"), b"hello\n")

        # Gone with Ross's networks; the host's policy as it was.
        bridge = json.loads(self.ok("network", "inspect", "app"))[0]["Options"]["com.docker.network.bridge.name"]
        case.assertIn(bridge, self.ruleset())
        self.ok("rm", "-f", "web", "peer")
        self.ok("network", "rm", "app")
        case.assertNotIn(bridge, self.ruleset())
        # twistd re-raises SIGTERM after a clean shutdown.
        case.assertIn(self.daemon.stop(), (0, -signal.SIGTERM))
        self.daemon.purge()
        rules = self.ruleset()
        case.assertNotIn("ROSS-", rules)
        case.assertFalse(self.opened())
        case.assertNotIn(self.daemon.network.bridge, rules)
        case.assertTrue("policy drop" in rules or ":FORWARD DROP" in rules, rules)


class DockerNftTests(FirewalledHost, TestCase):
    """
    dockerd with iptables-nft (Debian's default): FORWARD policy DROP.
    """

    setup = docker_rules("iptables-nft")
    rebuild = "iptables-nft -F FORWARD\n" + docker_rules("iptables-nft")
    backend = "iptables-nft"


class DockerLegacyTests(FirewalledHost, TestCase):
    """
    dockerd with iptables-legacy.
    """

    setup = docker_rules("iptables-legacy")
    rebuild = "iptables-legacy -F FORWARD\n" + docker_rules("iptables-legacy")
    backend = "iptables-legacy"


class NftablesTests(FirewalledHost, TestCase):
    """
    An nftables firewall that drops by policy in input and forward (as
    nftables.conf or firewalld set up).
    """

    setup = f"nft -f - <<'EOF'\n{NFT_FIREWALL}\nEOF"
    rebuild = f"nft delete table inet hostfw\nnft -f - <<'EOF'\n{NFT_FIREWALL}\nEOF"
    backend = "nftables inet hostfw"


def _retry(attempt: Any, seconds: float = 20) -> Any:
    """
    The output of C{attempt} (a completed process) once it succeeds,
    retrying while a server starts; AssertionError after C{seconds}.
    """
    deadline = time.monotonic() + seconds
    while True:
        result = attempt()
        if result.returncode == 0:
            return result.stdout
        if time.monotonic() > deadline:
            raise AssertionError(f"still failing after {seconds}s: {result.stderr!r}")
        time.sleep(0.2)


def _wait_for(predicate: Any, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds}s waiting for {predicate}")
        time.sleep(0.2)

