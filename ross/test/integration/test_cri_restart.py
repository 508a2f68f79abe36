"""
Kubernetes' pods outlive the daemon, as Ross's containers do: a daemon
killed with SIGKILL and started again finds its pods ready and their
containers running, with the same processes, their namespaces still
shared, their logs going on at kubelet's path, and it stops and removes
them as before.
"""

from __future__ import annotations

import os
import re
import time
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from ross.cri.v1 import api_pb2
from ross.testing.cri import CRIClients, container_config, pod_config
from ross.testing.daemon import DaemonProcess
from ross.testing.images import docker_archive

T = 30


class PodRestartTests(TestCase):
    timeout = 180

    def setUp(self) -> None:
        self.daemon = DaemonProcess()
        self.addCleanup(self.daemon.cleanup)

    def scenario(self) -> None:
        """
        Blocking: a pod of two containers, the daemon killed and started
        again, the pod looked at, stopped and removed.
        """
        daemon = self.daemon
        daemon.start()
        archive = docker_archive(daemon.base / "busybox.tar")
        loaded = daemon.ross("load", "-i", str(archive.path))
        self.assertEqual(loaded.returncode, 0, loaded.stderr)
        logs = daemon.base / "pods"
        pod = pod_config(log_directory=str(logs), hostname="survivor")
        cri = CRIClients(str(daemon.exec_root / "cri.sock"))
        try:
            runtime = cri.runtime
            pod_id = runtime.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=pod), timeout=T).pod_sandbox_id
            ids = []
            for name, command in (("server", "echo up > /tmp/index.html; exec httpd -f -p 8080 -h /tmp"),
                                  ("ticker", "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.1; done")):
                created = runtime.CreateContainer(api_pb2.CreateContainerRequest(
                    pod_sandbox_id=pod_id, sandbox_config=pod,
                    config=container_config(name, ["sh", "-c", command], log_path=f"{name}.log")), timeout=T)
                runtime.StartContainer(api_pb2.StartContainerRequest(container_id=created.container_id), timeout=T)
                ids.append(created.container_id)
            before = {cid: runtime.ContainerStatus(api_pb2.ContainerStatusRequest(container_id=cid),
                                                   timeout=T).status.started_at for cid in ids}
            time.sleep(0.5)
        finally:
            cri.close()

        daemon.kill()
        time.sleep(0.5)
        daemon.start()

        cri = CRIClients(str(daemon.exec_root / "cri.sock"))
        try:
            runtime = cri.runtime
            sandbox = runtime.PodSandboxStatus(api_pb2.PodSandboxStatusRequest(pod_sandbox_id=pod_id), timeout=T)
            self.assertEqual(sandbox.status.state, api_pb2.SANDBOX_READY)
            self.assertTrue(sandbox.status.network.ip)
            for cid in ids:
                status = runtime.ContainerStatus(api_pb2.ContainerStatusRequest(container_id=cid), timeout=T).status
                self.assertEqual(status.state, api_pb2.CONTAINER_RUNNING)
                # The same process: started when it was, not again.
                self.assertEqual(status.started_at, before[cid])
            # Still one network and UTS namespace for the pod.
            fetched = b""
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                answer = runtime.ExecSync(api_pb2.ExecSyncRequest(
                    container_id=ids[1], cmd=["wget", "-qO-", "http://127.0.0.1:8080/index.html"], timeout=10),
                    timeout=T)
                fetched = answer.stdout
                if answer.exit_code == 0:
                    break
                time.sleep(0.2)
            self.assertEqual(fetched, b"up\n")
            hostname = runtime.ExecSync(api_pb2.ExecSyncRequest(container_id=ids[1], cmd=["hostname"], timeout=10),
                                        timeout=T)
            self.assertEqual(hostname.stdout, b"survivor\n")
            # The log went on while the daemon was away, without a gap.
            ticks = [int(m.group(1)) for m in re.finditer(rb" stdout F tick (\d+)$",
                                                          (logs / "ticker.log").read_bytes(), re.M)]
            self.assertGreater(len(ticks), 10)
            self.assertEqual(ticks, list(range(ticks[0], ticks[0] + len(ticks))))

            runtime.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod_id), timeout=T)
            for cid in ids:
                status = runtime.ContainerStatus(api_pb2.ContainerStatusRequest(container_id=cid), timeout=T).status
                self.assertEqual(status.state, api_pb2.CONTAINER_EXITED)
            runtime.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod_id), timeout=T)
            listed = runtime.ListPodSandbox(api_pb2.ListPodSandboxRequest(), timeout=T)
            self.assertEqual(list(listed.items), [])
            self.assertEqual(list(runtime.ListContainers(api_pb2.ListContainersRequest(), timeout=T).containers), [])
        finally:
            cri.close()
        self.assertTrue(os.path.exists(logs / "server.log"))

    @inlineCallbacks
    def test_pod_survives_the_daemon(self) -> Any:
        yield deferToThread(self.scenario)
