"""
Pod sandboxes through the CRI: run (on Ross's bridge, with the pod's
hostname, DNS settings and host ports), status, list with filters, stop,
remove; kept out of plain listings; bad requests refused with the right
status and nothing made.
"""

from __future__ import annotations

import socket
import time
import urllib.request
from typing import Any

import grpc
from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread

from ross.cri.v1 import api_pb2
from ross.testing.cri import CRITestCase, container_config, pod_config
from ross.testing.dockerapi import request
from ross.testing.registry import free_port


def state_filter(state: Any) -> api_pb2.PodSandboxFilter:
    return api_pb2.PodSandboxFilter(state=api_pb2.PodSandboxStateValue(state=state))


class SandboxTests(CRITestCase):
    @inlineCallbacks
    def test_lifecycle(self) -> Any:
        """
        A pod runs with an address on the daemon's bridge and its
        metadata, labels and annotations; stopped it is not ready; removed
        it is gone, and removing again is no error.
        """
        config = pod_config("web", labels={"app": "web"}, annotations={"note": "n"})
        pod_id, _ = yield self.run_pod(config)
        response = yield self.call(self.cri.runtime.PodSandboxStatus,
                                   api_pb2.PodSandboxStatusRequest(pod_sandbox_id=pod_id))
        status = response.status
        self.assertEqual((status.id, status.state), (pod_id, api_pb2.SANDBOX_READY))
        self.assertEqual(status.metadata, config.metadata)
        self.assertEqual((dict(status.labels), dict(status.annotations)), ({"app": "web"}, {"note": "n"}))
        self.assertIn(".", status.network.ip)
        subnet = self.daemon.network.subnet.rpartition(".")[0]
        self.assertTrue(status.network.ip.startswith(subnet), (status.network.ip, subnet))
        yield self.call(self.cri.runtime.StopPodSandbox, api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod_id))
        response = yield self.call(self.cri.runtime.PodSandboxStatus,
                                   api_pb2.PodSandboxStatusRequest(pod_sandbox_id=pod_id))
        self.assertEqual((response.status.state, response.status.network.ip), (api_pb2.SANDBOX_NOTREADY, ""))
        yield self.call(self.cri.runtime.RemovePodSandbox, api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod_id))
        listed = yield self.call(self.cri.runtime.ListPodSandbox, api_pb2.ListPodSandboxRequest())
        self.assertEqual(list(listed.items), [])
        yield self.call(self.cri.runtime.RemovePodSandbox, api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod_id))
        self.assertEqual(self.daemon.engine.containers.records, {})

    @inlineCallbacks
    def test_list_filters(self) -> Any:
        """
        ListPodSandbox filters by ID (or its prefix), state and labels.
        """
        first, _ = yield self.run_pod(pod_config(labels={"tier": "a", "x": "1"}))
        second, _ = yield self.run_pod(pod_config(labels={"tier": "b"}))
        yield self.call(self.cri.runtime.StopPodSandbox, api_pb2.StopPodSandboxRequest(pod_sandbox_id=second))

        @inlineCallbacks
        def ids(f: api_pb2.PodSandboxFilter | None) -> Any:
            listed = yield self.call(self.cri.runtime.ListPodSandbox, api_pb2.ListPodSandboxRequest(filter=f))
            return [item.id for item in listed.items]

        self.assertEqual(sorted((yield ids(None))), sorted([first, second]))
        self.assertEqual((yield ids(api_pb2.PodSandboxFilter(id=first[:12]))), [first])
        self.assertEqual((yield ids(state_filter(api_pb2.SANDBOX_READY))), [first])
        self.assertEqual((yield ids(state_filter(api_pb2.SANDBOX_NOTREADY))), [second])
        self.assertEqual((yield ids(api_pb2.PodSandboxFilter(label_selector={"tier": "a"}))), [first])
        self.assertEqual((yield ids(api_pb2.PodSandboxFilter(label_selector={"tier": "a", "x": "2"}))), [])

    @inlineCallbacks
    def test_not_in_plain_listings(self) -> Any:
        """
        Pods and their containers are Kubernetes' (the k8s.io namespace):
        plain ross ps and docker's API leave them out, --all-namespaces
        shows them.
        """
        pod_id, pod = yield self.run_pod()
        container_id = yield self.start_container(pod_id, pod, container_config("c", ["sleep", "60"]))
        plain = yield self.ross("ps", "-aq", "--no-trunc")
        self.assertEqual(plain.stdout.split(), [])
        every = yield self.ross("ps", "-aq", "--no-trunc", "--all-namespaces")
        self.assertEqual(sorted(every.stdout.decode().split()), sorted([pod_id, container_id]))
        status, _, body = yield deferToThread(request, str(self.daemon.exec_root / "docker.sock"), "GET",
                                              "/containers/json?all=1")
        self.assertEqual((status, body.strip()), (200, b"[]"))

    @inlineCallbacks
    def test_hostname_dns_ports(self) -> Any:
        """
        The pod's containers see its hostname and DNS settings, and its
        host port reaches a server in one of them.
        """
        port = free_port()
        pod_id, pod = yield self.run_pod(pod_config(
            hostname="kube-pod",
            dns_config=api_pb2.DNSConfig(servers=["10.10.10.10"], searches=["example.org"], options=["ndots:3"]),
            port_mappings=[api_pb2.PortMapping(protocol=api_pb2.TCP, container_port=80, host_port=port,
                                               host_ip="127.0.0.1")]))
        server = yield self.start_container(pod_id, pod, container_config(
            "web", ["sh", "-c", "hostname > /tmp/index.html; exec httpd -f -p 80 -h /tmp"]))
        code, out, _ = yield self.exec_sync(server, "sh", "-c", "hostname; cat /etc/resolv.conf")
        self.assertEqual(code, 0)
        lines = out.decode().splitlines()
        self.assertEqual(lines[0], "kube-pod")
        self.assertIn("nameserver 10.10.10.10", lines)
        self.assertIn("search example.org", lines)
        self.assertIn("options ndots:3", lines)
        body = yield deferToThread(_get_eventually, f"http://127.0.0.1:{port}/index.html")
        self.assertEqual(body, b"kube-pod\n")

    @inlineCallbacks
    def test_bad_input(self) -> Any:
        """
        Incomplete metadata, an unknown runtime handler, a container's PID
        namespace (TARGET) and bad port mappings are INVALID_ARGUMENT; an unknown
        pod is NOT_FOUND, but for StopPodSandbox (idempotent: a pod
        removed is stopped); nothing is made.
        """
        run = self.cri.runtime.RunPodSandbox
        no_uid = pod_config()
        no_uid.metadata.uid = ""
        target_pid = pod_config()
        target_pid.linux.security_context.namespace_options.pid = api_pb2.TARGET
        for request in [
            api_pb2.RunPodSandboxRequest(),
            api_pb2.RunPodSandboxRequest(config=no_uid),
            api_pb2.RunPodSandboxRequest(config=pod_config(), runtime_handler="kata"),
            api_pb2.RunPodSandboxRequest(config=target_pid),
            api_pb2.RunPodSandboxRequest(config=pod_config(name="bad name")),
            api_pb2.RunPodSandboxRequest(config=pod_config(port_mappings=[api_pb2.PortMapping(container_port=0,
                                                                                             host_port=80)])),
        ]:
            code = yield self.failure_code(run, request)
            self.assertEqual(code, grpc.StatusCode.INVALID_ARGUMENT, request)
        code = yield self.failure_code(self.cri.runtime.PodSandboxStatus,
                                       api_pb2.PodSandboxStatusRequest(pod_sandbox_id="f" * 64))
        self.assertEqual(code, grpc.StatusCode.NOT_FOUND)
        yield self.call(self.cri.runtime.StopPodSandbox, api_pb2.StopPodSandboxRequest(pod_sandbox_id="f" * 64))
        self.assertEqual(self.daemon.engine.containers.records, {})

    @inlineCallbacks
    def test_duplicate(self) -> Any:
        """
        The same pod (name, namespace, uid, attempt) cannot run twice.
        """
        config = pod_config()
        yield self.run_pod(config)
        code = yield self.failure_code(self.cri.runtime.RunPodSandbox, api_pb2.RunPodSandboxRequest(config=config))
        self.assertEqual(code, grpc.StatusCode.ALREADY_EXISTS)
        self.assertEqual(len(self.daemon.engine.containers.records), 1)

    @inlineCallbacks
    def test_sysctls(self) -> Any:
        """
        The pod's sysctls are set in its IPC and network namespaces, where
        its containers see them (and the host does not); one that is not
        namespaced is INVALID_ARGUMENT and nothing is made.
        """
        with open("/proc/sys/kernel/shm_rmid_forced") as f:
            host_value = f.read()
        sysctls = {"kernel.shm_rmid_forced": "1", "fs.mqueue.msg_max": "100", "net.ipv4.ip_forward": "0"}
        pod_id, pod = yield self.run_pod(pod_config(linux=api_pb2.LinuxPodSandboxConfig(sysctls=sysctls)))
        cid = yield self.start_container(pod_id, pod, container_config("c", ["sleep", "60"]))
        for key, value in sysctls.items():
            response = yield self.call(self.cri.runtime.ExecSync, api_pb2.ExecSyncRequest(
                container_id=cid, cmd=["cat", "/proc/sys/" + key.replace(".", "/")], timeout=30))
            self.assertEqual(response.stdout, value.encode() + b"\n", key)
        with open("/proc/sys/kernel/shm_rmid_forced") as f:
            self.assertEqual(f.read(), host_value)
        before = set(self.daemon.engine.containers.records)
        for bad in ({"vm.swappiness": "10"}, {"kernel.shm_rmid_forced": "1\nx"}):
            code = yield self.failure_code(self.cri.runtime.RunPodSandbox, api_pb2.RunPodSandboxRequest(
                config=pod_config(linux=api_pb2.LinuxPodSandboxConfig(sysctls=bad))))
            self.assertEqual(code, grpc.StatusCode.INVALID_ARGUMENT, bad)
        host_ipc = pod_config(linux=api_pb2.LinuxPodSandboxConfig(sysctls={"kernel.shm_rmid_forced": "1"}))
        host_ipc.linux.security_context.namespace_options.ipc = api_pb2.NODE
        code = yield self.failure_code(self.cri.runtime.RunPodSandbox, api_pb2.RunPodSandboxRequest(config=host_ipc))
        self.assertEqual(code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertEqual(set(self.daemon.engine.containers.records), before)

    @inlineCallbacks
    def test_long_names(self) -> Any:
        """
        A pod and a container with the longest names Kubernetes allows
        (253 and 63 characters) run, and keep their metadata.
        """
        pod_id, pod = yield self.run_pod(pod_config("p" * 253))
        cid = yield self.start_container(pod_id, pod, container_config("c" * 63, ["sleep", "60"]))
        response = yield self.call(self.cri.runtime.ContainerStatus, api_pb2.ContainerStatusRequest(container_id=cid))
        self.assertEqual((response.status.metadata.name, response.status.state),
                         ("c" * 63, api_pb2.CONTAINER_RUNNING))
        response = yield self.call(self.cri.runtime.PodSandboxStatus,
                                   api_pb2.PodSandboxStatusRequest(pod_sandbox_id=pod_id))
        self.assertEqual(response.status.metadata.name, "p" * 253)


def _get_eventually(url: str) -> bytes:
    """
    GET C{url} (blocking), trying again while the server starts (bounded).
    """
    deadline = time.monotonic() + 15
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                data: bytes = response.read()
                return data
        except (OSError, socket.timeout):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
