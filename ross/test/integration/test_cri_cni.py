"""
Pods on a CNI network: the daemon runs the real plugins of Debian's
containernetworking-plugins (bridge with host-local IPAM) from a
configuration directory of the test's own, as kubelet's runtimes do with
/etc/cni/net.d, and the pod is reachable at the address they gave it.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import grpc
from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase

from ross.cri import cni
from ross.cri.v1 import api_pb2
from ross.errors import InvalidArgument
from ross.test.integration.test_cri_pods import _get_eventually
from ross.testing.cri import CRITestCase, container_config, pod_config
from ross.testing.daemon import short_tempdir

PLUGINS = "/usr/lib/cni"


def _link_exists(name: str) -> bool:
    return subprocess.run(["ip", "link", "show", name], capture_output=True, timeout=30).returncode == 0


class CNITestCase(CRITestCase):
    """
    A daemon whose CNI configuration directory holds C{self.plugins()}
    as one network on a bridge of the test's own.
    """

    def daemon_options(self) -> dict[str, Any]:
        self.work = short_tempdir("ross-cni-")
        self.bridge = f"rc{secrets.token_hex(3)}"
        self.subnet = ipaddress.ip_network(f"10.251.{secrets.randbelow(250)}.0/24")
        self.ipam = self.work / "ipam"
        conf = self.work / "net.d"
        conf.mkdir()
        (conf / "10-test.conflist").write_text(json.dumps(
            {"cniVersion": "1.0.0", "name": f"net-{self.bridge}", "plugins": self.plugins()}))
        # After the daemon stopped: the bridge plugin leaves its bridge.
        self.addCleanup(self._remove_host_side)
        return {"cni_conf_dir": str(conf), "cni_bin_dirs": (PLUGINS,)}

    def plugins(self) -> list[dict[str, Any]]:
        return [{"type": "bridge", "bridge": self.bridge, "isGateway": True, "ipMasq": False,
                 "ipam": {"type": "host-local", "ranges": [[{"subnet": str(self.subnet)}]],
                          "dataDir": str(self.ipam)}}]

    def _remove_host_side(self) -> None:
        if _link_exists(self.bridge):
            subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, timeout=30)
        shutil.rmtree(self.work, ignore_errors=True)

    def ports(self) -> list[str]:
        """The bridge's ports (the pods' host-side veths)."""
        out = subprocess.run(["ip", "-o", "link", "show", "master", self.bridge], capture_output=True, text=True,
                             timeout=30)
        return [line.split(":")[1].strip() for line in out.stdout.splitlines()]

    def leases(self) -> list[str]:
        """The addresses host-local holds."""
        network = self.ipam / f"net-{self.bridge}"
        if not network.exists():
            return []
        return sorted(n for n in os.listdir(network) if n[0].isdigit() and ":" not in n and n.count(".") == 3)


class PodNetworkTests(CNITestCase):
    @inlineCallbacks
    def test_pod_on_the_network(self) -> Any:
        """
        The pod gets an address of the network's subnet on eth0, which its
        containers share; the host reaches a server in it there. Stopping
        the pod takes it off (its veth and its lease gone); the status
        has no address then.
        """
        pod_id, pod = yield self.run_pod(pod_config())
        status = yield self.call(self.cri.runtime.PodSandboxStatus,
                                 api_pb2.PodSandboxStatusRequest(pod_sandbox_id=pod_id))
        address = status.status.network.ip
        self.assertIn(ipaddress.ip_address(address), self.subnet)
        self.assertEqual(self.leases(), [address])
        self.assertEqual(len(self.ports()), 1)
        server = yield self.start_container(pod_id, pod, container_config(
            "web", ["sh", "-c", "echo served > /tmp/index.html && exec httpd -f -p 80 -h /tmp"]))
        code, out, _ = yield self.exec_sync(server, "ip", "-4", "-o", "addr", "show", "eth0")
        self.assertEqual(code, 0)
        self.assertIn(f" {address}/{self.subnet.prefixlen} ", out.decode())

        body = yield deferToThread(_get_eventually, f"http://{address}/index.html")
        self.assertEqual(body, b"served\n")

        yield self.call(self.cri.runtime.StopPodSandbox, api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod_id))
        self.assertEqual(self.ports(), [])
        self.assertEqual(self.leases(), [])
        status = yield self.call(self.cri.runtime.PodSandboxStatus,
                                 api_pb2.PodSandboxStatusRequest(pod_sandbox_id=pod_id))
        self.assertEqual(status.status.network.ip, "")
        yield self.call(self.cri.runtime.RemovePodSandbox, api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod_id))
        self.assertEqual(os.listdir(self.daemon.root / "cri" / "cni"), [])

    @inlineCallbacks
    def test_remove_takes_it_off(self) -> Any:
        """
        Removing a running pod (no stop first) takes it off the network too.
        """
        pod_id, _ = yield self.run_pod(pod_config())
        self.assertEqual(len(self.leases()), 1)
        yield self.call(self.cri.runtime.RemovePodSandbox, api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod_id))
        self.assertEqual((self.ports(), self.leases()), ([], []))


#: The iptables chains Debian's portmap plugin makes once for every pod,
#: in the nat table.
PORTMAP_CHAINS = ("CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-SETMARK", "CNI-HOSTPORT-MASQ")


def _nat_rules() -> list[str]:
    out = subprocess.run(["iptables", "-w", "-t", "nat", "-S"], capture_output=True, text=True, timeout=30)
    return out.stdout.splitlines()


class PortMapTests(CNITestCase):
    """
    The portmap plugin after the bridge, given the pod's host ports
    through the portMappings capability.
    """

    def plugins(self) -> list[dict[str, Any]]:
        return super().plugins() + [{"type": "portmap", "capabilities": {"portMappings": True}}]

    def setUp(self) -> Any:
        # The plugin leaves its shared chains behind (they serve every
        # pod of the host): gone again after the test when they were not
        # there before it.
        if not any(rule.startswith("-N CNI-HOSTPORT-") for rule in _nat_rules()):
            self.addCleanup(self._remove_portmap_chains)
        return super().setUp()

    def _remove_portmap_chains(self) -> None:
        for rule in map(shlex.split, _nat_rules()):
            if rule[0] == "-A" and rule[1] not in PORTMAP_CHAINS and rule[-1] in PORTMAP_CHAINS:
                subprocess.run(["iptables", "-w", "-t", "nat", "-D", *rule[1:]], capture_output=True, timeout=30)
        for chain in PORTMAP_CHAINS:
            for flag in ("-F", "-X"):
                subprocess.run(["iptables", "-w", "-t", "nat", flag, chain], capture_output=True, timeout=30)

    @inlineCallbacks
    def test_host_port(self) -> Any:
        """
        A pod's host port reaches its server through the host's address
        (the plugin's DNAT); once the pod stops, the port's rules are gone.
        """
        host_port = 20000 + secrets.randbelow(20000)
        pod_id, pod = yield self.run_pod(pod_config(port_mappings=[api_pb2.PortMapping(
            protocol=api_pb2.TCP, container_port=8080, host_port=host_port)]))
        yield self.start_container(pod_id, pod, container_config(
            "web", ["sh", "-c", "echo mapped > /tmp/index.html && exec httpd -f -p 8080 -h /tmp"]))
        self.assertTrue([r for r in _nat_rules() if f"--dport {host_port}" in r])
        gateway = next(self.subnet.hosts())

        body = yield deferToThread(_get_eventually, f"http://{gateway}:{host_port}/index.html")
        self.assertEqual(body, b"mapped\n")
        yield self.call(self.cri.runtime.StopPodSandbox, api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod_id))
        self.assertEqual([r for r in _nat_rules() if f"--dport {host_port}" in r], [])
        yield self.call(self.cri.runtime.RemovePodSandbox, api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod_id))


class FailingPluginTests(CNITestCase):
    def plugins(self) -> list[dict[str, Any]]:
        # The bridge plugin works; the one after it is not installed.
        return super().plugins() + [{"type": "not-installed-here"}]

    @inlineCallbacks
    def test_failure_undoes(self) -> Any:
        """
        A plugin that cannot run fails the pod (FAILED_PRECONDITION, naming
        it), and what the plugins before it did is undone: no pod, no
        veth, no lease.
        """
        try:
            yield self.call(self.cri.runtime.RunPodSandbox, api_pb2.RunPodSandboxRequest(config=pod_config()))
        except grpc.RpcError as e:
            self.assertEqual(e.code(), grpc.StatusCode.FAILED_PRECONDITION)
            self.assertIn("not-installed-here", e.details())
        else:
            self.fail("the pod started without its network")
        listed = yield self.call(self.cri.runtime.ListPodSandbox, api_pb2.ListPodSandboxRequest())
        self.assertEqual(list(listed.items), [])
        self.assertEqual((self.ports(), self.leases()), ([], []))


class ConfigTests(SynchronousTestCase):
    """
    Reading the configuration directory (pure logic).
    """

    def write(self, name: str, content: str) -> str:
        directory = self.mktemp()
        os.makedirs(directory)
        Path(directory, name).write_text(content)
        return directory

    def test_first_file_by_name(self) -> None:
        directory = self.write("20-b.conflist", json.dumps({"name": "b", "cniVersion": "1.0.0",
                                                             "plugins": [{"type": "bridge"}]}))
        Path(directory, "10-a.conf").write_text(json.dumps({"name": "a", "cniVersion": "0.4.0", "type": "ptp"}))
        Path(directory, "00-ignored.txt").write_text("not a configuration")
        network = cni.load_config(directory)
        assert network is not None
        self.assertEqual((network.name, network.cni_version, [p["type"] for p in network.plugins]),
                         ("a", "0.4.0", ["ptp"]))

    def test_none(self) -> None:
        self.assertIsNone(cni.load_config(self.mktemp()))

    def test_refused(self) -> None:
        """
        What cannot be used is refused, naming the file: not JSON, no
        plugins, a plugin type that is a path.
        """
        for content in ("{", "[]", json.dumps({"name": "x", "plugins": []}),
                        json.dumps({"name": "x", "plugins": [{"type": "../../bin/sh"}]}),
                        json.dumps({"name": "x", "plugins": [{"type": "/bin/sh"}]}),
                        json.dumps({"plugins": [{"type": "bridge"}]})):
            directory = self.write("10-x.conflist", content)
            e = self.assertRaises(InvalidArgument, cni.load_config, directory)
            self.assertIn("10-x.conflist", str(e))

    def test_plugin_input(self) -> None:
        """
        A plugin is given the network's name and version, the port
        mappings when it asks for them, and the result before it.
        """
        network = cni.parse_config(json.dumps({"name": "n", "cniVersion": "1.0.0", "plugins": [
            {"type": "bridge"}, {"type": "portmap", "capabilities": {"portMappings": True}}]}).encode(), "f")
        pod = cni.PodNetwork("ns", "p", "u", port_mappings=((8080, 80, "tcp", ""),))
        first = json.loads(cni.plugin_input(network, network.plugins[0], pod, None))
        self.assertEqual(first, {"type": "bridge", "name": "n", "cniVersion": "1.0.0"})
        second = json.loads(cni.plugin_input(network, network.plugins[1], pod, {"ips": []}))
        self.assertEqual(second["runtimeConfig"], {"portMappings": [
            {"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": ""}]})
        self.assertEqual(second["prevResult"], {"ips": []})
        self.assertEqual(cni.address_of({"ips": [{"address": "10.1.2.3/24"}]}), "10.1.2.3")
        self.assertEqual(cni.address_of({"ip4": {"ip": "10.1.2.4/24"}}), "10.1.2.4")
        self.assertEqual(cni.address_of({}), "")
