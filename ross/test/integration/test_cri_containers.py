"""
A pod's containers through the CRI: create, start, stop with a timeout,
remove, list with filters, status, ExecSync with a timeout, stats, logs in
the CRI's format where kubelet says (and reopened for its rotation), and
two containers of one pod sharing its network, IPC and UTS namespaces.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from typing import Any

import grpc
from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread

from ross.cri.v1 import api_pb2
from ross.testing.containers import sleep
from ross.testing.cri import CRITestCase, container_config, pod_config

#: A CRI log line: RFC 3339 time with nanoseconds, stream, tag, text.
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z (stdout|stderr) (P|F) (.*)$")


def container_state(state: Any) -> api_pb2.ContainerFilter:
    return api_pb2.ContainerFilter(state=api_pb2.ContainerStateValue(state=state))


def hugetlb_limit_file(pid: int, size: str) -> str:
    """
    The file of process C{pid}'s huge page limit of C{size}, in its v1
    hugetlb hierarchy or, on a host without one, its v2 group.
    """
    with open(f"/proc/{pid}/cgroup") as f:
        groups = dict(line.split(":", 2)[1:] for line in f.read().splitlines())
    if "hugetlb" in groups:
        return f"/sys/fs/cgroup/hugetlb{groups['hugetlb']}/hugetlb.{size}.limit_in_bytes"
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split() for line in f]
    v2 = next(fields[4] for fields in mounts if fields[fields.index("-") + 1] == "cgroup2")
    return f"{v2}{groups['']}/hugetlb.{size}.max"


class ContainerTests(CRITestCase):
    @inlineCallbacks
    def setUp(self) -> Any:  # type: ignore[override]
        yield super().setUp()
        self.logs = self.log_directory()
        self.pod_id, self.pod = yield self.run_pod(pod_config(log_directory=self.logs, hostname="shared"))

    @inlineCallbacks
    def status(self, container_id: str) -> Any:
        response = yield self.call(self.cri.runtime.ContainerStatus,
                                   api_pb2.ContainerStatusRequest(container_id=container_id))
        return response.status

    @inlineCallbacks
    def test_lifecycle(self) -> Any:
        """
        Created, running, stopped within its timeout (SIGKILL after it: the
        shell ignores SIGTERM as PID 1), removed; the status says each,
        with the metadata, labels, annotations and times.
        """
        config = container_config("loop", ["sh", "-c", "while true; do sleep 1; done"],
                                  labels={"k": "v"}, annotations={"a": "b"}, log_path="loop.log")
        created = yield self.call(self.cri.runtime.CreateContainer, api_pb2.CreateContainerRequest(
            pod_sandbox_id=self.pod_id, config=config, sandbox_config=self.pod))
        cid = created.container_id
        status = yield self.status(cid)
        self.assertEqual((status.state, status.metadata.name), (api_pb2.CONTAINER_CREATED, "loop"))
        self.assertEqual((dict(status.labels), dict(status.annotations)), ({"k": "v"}, {"a": "b"}))
        self.assertEqual(status.log_path, os.path.join(self.logs, "loop.log"))
        self.assertEqual(status.image.image, "busybox")
        self.assertTrue(status.image_ref.startswith("sha256:"))
        yield self.call(self.cri.runtime.StartContainer, api_pb2.StartContainerRequest(container_id=cid))
        status = yield self.status(cid)
        self.assertEqual(status.state, api_pb2.CONTAINER_RUNNING)
        # Verbose, with what tools read of it (crictl inspect's info.pid).
        verbose = yield self.call(self.cri.runtime.ContainerStatus,
                                  api_pb2.ContainerStatusRequest(container_id=cid, verbose=True))
        info = json.loads(verbose.info["info"])
        self.assertEqual((info["pid"], info["sandboxID"]), (self.record(cid).state.pid, self.pod_id))
        verbose = yield self.call(self.cri.runtime.PodSandboxStatus,
                                  api_pb2.PodSandboxStatusRequest(pod_sandbox_id=self.pod_id, verbose=True))
        self.assertEqual(json.loads(verbose.info["info"])["pid"], self.record(self.pod_id).state.pid)
        self.assertGreaterEqual(status.started_at, status.created_at)
        before = time.monotonic()
        yield self.call(self.cri.runtime.StopContainer, api_pb2.StopContainerRequest(container_id=cid, timeout=1))
        self.assertLess(time.monotonic() - before, 30)
        status = yield self.status(cid)
        self.assertEqual((status.state, status.exit_code, status.reason), (api_pb2.CONTAINER_EXITED, 137, "Error"))
        self.assertGreaterEqual(status.finished_at, status.started_at)
        # Stopping a stopped container is no error.
        yield self.call(self.cri.runtime.StopContainer, api_pb2.StopContainerRequest(container_id=cid, timeout=1))
        yield self.call(self.cri.runtime.RemoveContainer, api_pb2.RemoveContainerRequest(container_id=cid))
        code = yield self.failure_code(self.cri.runtime.ContainerStatus,
                                       api_pb2.ContainerStatusRequest(container_id=cid))
        self.assertEqual(code, grpc.StatusCode.NOT_FOUND)
        yield self.call(self.cri.runtime.RemoveContainer, api_pb2.RemoveContainerRequest(container_id=cid))

    @inlineCallbacks
    def test_stop_as_it_exits(self) -> Any:
        """
        A container whose command ends just as it is stopped (its shim
        held until the stop is asked, so the daemon has not heard of the
        exit yet) is stopped without error, and exited.
        """
        for _ in range(3):
            cid = yield self.start_container(self.pod_id, self.pod, container_config(
                f"ending-{_}", ["sh", "-c", "sleep 0.5"]))
            shim_pid = self.daemon.engine.containers.supervisor.shims[cid].shim_pid
            os.kill(shim_pid, signal.SIGSTOP)
            try:
                yield sleep(1)
                stopping = self.call(self.cri.runtime.StopContainer,
                                     api_pb2.StopContainerRequest(container_id=cid, timeout=10))
                yield sleep(0.2)
            finally:
                os.kill(shim_pid, signal.SIGCONT)
            yield stopping
            yield self.wait_for(lambda: self.record(cid).state.status == "exited")

    @inlineCallbacks
    def test_exit_and_list(self) -> Any:
        """
        A command that ends is exited with its code ("Completed" for 0);
        ListContainers filters by ID prefix, state, pod and labels.
        """
        done = yield self.start_container(self.pod_id, self.pod, container_config("done", ["true"],
                                                                                  labels={"role": "job"}))
        running = yield self.start_container(self.pod_id, self.pod, container_config("up", ["sleep", "60"]))
        yield self.wait_for(lambda: self.record(done).state.status == "exited")
        status = yield self.status(done)
        self.assertEqual((status.state, status.exit_code, status.reason), (api_pb2.CONTAINER_EXITED, 0, "Completed"))

        @inlineCallbacks
        def ids(f: api_pb2.ContainerFilter | None) -> Any:
            listed = yield self.call(self.cri.runtime.ListContainers, api_pb2.ListContainersRequest(filter=f))
            return sorted(c.id for c in listed.containers)

        self.assertEqual((yield ids(None)), sorted([done, running]))
        self.assertEqual((yield ids(api_pb2.ContainerFilter(id=running[:10]))), [running])
        self.assertEqual((yield ids(container_state(api_pb2.CONTAINER_RUNNING))), [running])
        self.assertEqual((yield ids(container_state(api_pb2.CONTAINER_EXITED))), [done])
        self.assertEqual((yield ids(api_pb2.ContainerFilter(label_selector={"role": "job"}))), [done])
        self.assertEqual((yield ids(api_pb2.ContainerFilter(pod_sandbox_id=self.pod_id))), sorted([done, running]))
        self.assertEqual((yield ids(api_pb2.ContainerFilter(pod_sandbox_id="0" * 64))), [])

    @inlineCallbacks
    def test_start_failure(self) -> Any:
        """
        A container whose start fails (its command is not there) is exited
        with containerd's 128 and "StartError" and the error as its
        message, not created: kubelet restarts a created container
        whatever the pod's restart policy, and without back-off.
        """
        config = container_config("missing", ["/does/not/exist"])
        created = yield self.call(self.cri.runtime.CreateContainer, api_pb2.CreateContainerRequest(
            pod_sandbox_id=self.pod_id, config=config, sandbox_config=self.pod))
        cid = created.container_id
        code = yield self.failure_code(self.cri.runtime.StartContainer, api_pb2.StartContainerRequest(container_id=cid))
        self.assertEqual(code, grpc.StatusCode.FAILED_PRECONDITION)
        status = yield self.status(cid)
        self.assertEqual((status.state, status.exit_code, status.reason),
                         (api_pb2.CONTAINER_EXITED, 128, "StartError"))
        self.assertIn("/does/not/exist", status.message)
        self.assertEqual(status.finished_at, status.created_at)
        listed = yield self.call(self.cri.runtime.ListContainers, api_pb2.ListContainersRequest(
            filter=container_state(api_pb2.CONTAINER_EXITED)))
        self.assertEqual([c.id for c in listed.containers], [cid])

    @inlineCallbacks
    def test_exec_sync(self) -> Any:
        """
        ExecSync gives the command's output per stream and its exit code;
        one that outlives its timeout is DEADLINE_EXCEEDED and killed; no
        command, or a NUL byte in it, is INVALID_ARGUMENT (the engine's
        exec checks).
        """
        cid = yield self.start_container(self.pod_id, self.pod, container_config("box", ["sleep", "600"]))
        code, out, err = yield self.exec_sync(cid, "sh", "-c", "echo out; echo err >&2; exit 3")
        self.assertEqual((code, out, err), (3, b"out\n", b"err\n"))
        code, _, _ = yield self.exec_sync(cid, "no-such-command")
        self.assertEqual(code, 127)
        failed = yield self.failure_code(self.cri.runtime.ExecSync, api_pb2.ExecSyncRequest(
            container_id=cid, cmd=["sleep", "4321"], timeout=1))
        self.assertEqual(failed, grpc.StatusCode.DEADLINE_EXCEEDED)
        _, ps, _ = yield self.exec_sync(cid, "ps", "-o", "args")
        self.assertNotIn(b"4321", ps)
        for cmd in ([], ["echo", "a\0b"]):
            failed = yield self.failure_code(self.cri.runtime.ExecSync, api_pb2.ExecSyncRequest(
                container_id=cid, cmd=cmd))
            self.assertEqual(failed, grpc.StatusCode.INVALID_ARGUMENT)

    @inlineCallbacks
    def test_logs(self) -> Any:
        """
        The log is at the pod's log directory and the container's path, in
        the CRI's format: one line per line of output, full lines tagged F,
        a line without its newline tagged F when the stream ends; after a
        rename, ReopenContainerLog starts a new file.
        """
        config = container_config("talk", ["sh", "-c", "echo one; echo two >&2; printf 'no newline'; "
                                                       "while [ ! -e /tmp/go ]; do sleep 0.1; done; echo after"],
                                  log_path="talk/0.log")
        cid = yield self.start_container(self.pod_id, self.pod, config)
        path = os.path.join(self.logs, "talk", "0.log")
        yield self.wait_for(lambda: os.path.exists(path) and b"two" in open(path, "rb").read())
        os.rename(path, path + ".1")
        yield self.call(self.cri.runtime.ReopenContainerLog, api_pb2.ReopenContainerLogRequest(container_id=cid))
        self.assertTrue(os.path.exists(path))
        yield self.exec_sync(cid, "touch", "/tmp/go")
        yield self.wait_for(lambda: self.record(cid).state.status == "exited")
        first = [LOG_LINE.match(line) for line in open(path + ".1").read().splitlines()]
        second = [LOG_LINE.match(line) for line in open(path).read().splitlines()]
        self.assertNotIn(None, first + second)
        entries = [m.groups() for m in first + second if m is not None]
        self.assertEqual(sorted(entries[:2]), [("stderr", "F", "two"), ("stdout", "F", "one")])
        self.assertEqual(entries[2:], [("stdout", "F", "no newlineafter")])

    @inlineCallbacks
    def test_oom_score_adj_and_cpuset(self) -> Any:
        """
        The container's resources' OOM score adjustment and cpuset are its
        processes'.
        """
        config = container_config("o", ["sleep", "600"])
        config.linux.resources.oom_score_adj = 250
        config.linux.resources.cpuset_cpus = "0"
        cid = yield self.start_container(self.pod_id, self.pod, config)
        _, out, _ = yield self.exec_sync(cid, "sh", "-c", "cat /proc/1/oom_score_adj; grep Cpus_allowed_list "
                                                          "/proc/1/status")
        self.assertEqual(out.split(), [b"250", b"Cpus_allowed_list:", b"0"])

    @inlineCallbacks
    def test_hugepage_limits(self) -> Any:
        """
        Huge page limits are the container's hugetlb cgroup's, changed by
        UpdateContainerResources and shown by ContainerStatus; a page size
        the host lacks is refused and creates nothing.
        """
        config = container_config("huge", ["sleep", "600"])
        config.linux.resources.hugepage_limits.add(page_size="2MB", limit=4 << 21)
        cid = yield self.start_container(self.pod_id, self.pod, config)
        path = hugetlb_limit_file(self.record(cid).state.pid, "2MB")
        with open(path) as f:
            self.assertEqual(int(f.read()), 4 << 21)

        update = api_pb2.LinuxContainerResources()
        update.hugepage_limits.add(page_size="2MB", limit=1 << 21)
        yield self.call(self.cri.runtime.UpdateContainerResources,
                        api_pb2.UpdateContainerResourcesRequest(container_id=cid, linux=update))
        with open(path) as f:
            self.assertEqual(int(f.read()), 1 << 21)
        status = yield self.call(self.cri.runtime.ContainerStatus, api_pb2.ContainerStatusRequest(container_id=cid))
        self.assertEqual([(h.page_size, h.limit) for h in status.status.resources.linux.hugepage_limits],
                         [("2MB", 1 << 21)])
        # An update that names no huge pages (crictl update has no flag
        # for them) leaves them, in the cgroup and in the status alike.
        yield self.call(self.cri.runtime.UpdateContainerResources, api_pb2.UpdateContainerResourcesRequest(
            container_id=cid, linux=api_pb2.LinuxContainerResources(cpu_shares=512)))
        with open(path) as f:
            self.assertEqual(int(f.read()), 1 << 21)
        status = yield self.call(self.cri.runtime.ContainerStatus, api_pb2.ContainerStatusRequest(container_id=cid))
        self.assertEqual([(h.page_size, h.limit) for h in status.status.resources.linux.hugepage_limits],
                         [("2MB", 1 << 21)])

        before = set(self.daemon.engine.containers.records)
        bad = container_config("bad", ["true"])
        bad.linux.resources.hugepage_limits.add(page_size="3MB", limit=1 << 21)
        code = yield self.failure_code(self.cri.runtime.CreateContainer, api_pb2.CreateContainerRequest(
            pod_sandbox_id=self.pod_id, config=bad, sandbox_config=self.pod))
        self.assertEqual(code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertEqual(set(self.daemon.engine.containers.records), before)

    @inlineCallbacks
    def test_pid_namespaces(self) -> Any:
        """
        The PID namespace as the CRI asks: a pod's (POD: the sandbox's
        first process is PID 1, sees every container's processes and reaps
        their orphans), another container's (TARGET), or the host's (NODE).
        """
        pod_id, pod = yield self.run_pod(pod_config(pid=api_pb2.POD))
        first = yield self.start_container(pod_id, pod, container_config("a", ["sleep", "600"], pid=api_pb2.POD))
        second = yield self.start_container(pod_id, pod, container_config("b", ["sleep", "601"], pid=api_pb2.POD))
        commands = "for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f; echo; done"
        _, seen, _ = yield self.exec_sync(second, "sh", "-c", commands)
        self.assertIn("sleep 600 ", seen.decode())
        self.assertIn("sleep 601 ", seen.decode())
        _, init, _ = yield self.exec_sync(second, "cat", "/proc/1/cmdline")
        # Kubernetes' pause, not the shim's command line (host paths).
        self.assertEqual(init.rstrip(b"\0"), b"/pause")
        # An orphan (its shell gone) is the pod's first process's to reap:
        # killed, it does not stay a zombie.
        _, orphan, _ = yield self.exec_sync(first, "sh", "-c", "sleep 300 >/dev/null 2>&1 & echo $!")
        orphan_pid = orphan.decode().strip()
        self.assertTrue(orphan_pid.isdigit(), orphan)
        yield self.exec_sync(second, "kill", "-9", orphan_pid)
        gone = "for i in $(seq 100); do [ -e /proc/{0} ] || exit 0; sleep 0.1; done; cat /proc/{0}/status; exit 1"
        code, out, _ = yield self.exec_sync(second, "sh", "-c", gone.format(orphan_pid))
        self.assertEqual(code, 0, out)

        # Its first process gone, the rest of a container sharing the pod's
        # namespace goes too (nothing else would end it).
        short = yield self.start_container(pod_id, pod, container_config(
            "short", ["sh", "-c", "sleep 600 & sleep 0.5; exit 3"], pid=api_pb2.POD))
        yield self.wait_for(lambda: self.record(short).state.status == "exited")
        self.assertEqual(self.record(short).state.exit_code, 3)

        target = container_config("t", ["sleep", "602"], pid=api_pb2.TARGET)
        target.linux.security_context.namespace_options.target_id = first
        third = yield self.start_container(pod_id, pod, target)
        _, init, _ = yield self.exec_sync(third, "cat", "/proc/1/cmdline")
        self.assertNotIn(b"sleep", init)

        host = yield self.start_container(self.pod_id, self.pod, container_config("h", ["sleep", "603"],
                                                                                  pid=api_pb2.NODE))
        code, _, _ = yield self.exec_sync(host, "test", "-d", f"/proc/{os.getpid()}")
        self.assertEqual(code, 0, "the host's processes are not seen with pid NODE")
        own = yield self.start_container(self.pod_id, self.pod, container_config("o", ["sleep", "604"]))
        _, init, _ = yield self.exec_sync(own, "cat", "/proc/1/cmdline")
        self.assertEqual(init, b"sleep\x00604\x00")
        yield self.call(self.cri.runtime.StopPodSandbox, api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod_id))
        yield self.call(self.cri.runtime.RemovePodSandbox, api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod_id))

    @inlineCallbacks
    def test_pod_shares_namespaces(self) -> Any:
        """
        Two containers of one pod share its network (one reaches the
        other's server on 127.0.0.1), IPC and UTS namespaces, and have
        mount and PID namespaces of their own.
        """
        server = yield self.start_container(self.pod_id, self.pod, container_config(
            "server", ["sh", "-c", "echo served > /tmp/index.html; exec httpd -f -p 8080 -h /tmp"]))
        client = yield self.start_container(self.pod_id, self.pod, container_config("client", ["sleep", "600"]))
        namespaces = "for ns in net ipc uts mnt pid; do readlink /proc/1/ns/$ns; done; hostname"
        _, in_server, _ = yield self.exec_sync(server, "sh", "-c", namespaces)
        _, in_client, _ = yield self.exec_sync(client, "sh", "-c", namespaces)
        server_ns, client_ns = in_server.decode().split(), in_client.decode().split()
        self.assertEqual(server_ns[:3], client_ns[:3])
        self.assertNotEqual(server_ns[3], client_ns[3])
        self.assertNotEqual(server_ns[4], client_ns[4])
        self.assertEqual((server_ns[5], client_ns[5]), ("shared", "shared"))
        fetched = b""
        for _ in range(100):
            code, fetched, _ = yield self.exec_sync(client, "wget", "-qO-", "http://127.0.0.1:8080/index.html")
            if code == 0:
                break
        self.assertEqual(fetched, b"served\n")

    @inlineCallbacks
    def test_pid_namespace_options(self) -> Any:
        """
        A container's PID namespace as its namespace options say: the
        pod's (shared: one sees the other's processes, and PID 1 is the
        sandbox's), its own (its command is PID 1), or the host's.
        """
        def config(name: str, mode: Any, command: list[str]) -> api_pb2.ContainerConfig:
            c = container_config(name, command)
            c.linux.security_context.namespace_options.pid = mode
            return c

        first = yield self.start_container(self.pod_id, self.pod, config("a", api_pb2.POD, ["sleep", "1111"]))
        second = yield self.start_container(self.pod_id, self.pod, config("b", api_pb2.POD, ["sleep", "2222"]))
        own = yield self.start_container(self.pod_id, self.pod, config("c", api_pb2.CONTAINER, ["sleep", "3333"]))
        host = yield self.start_container(self.pod_id, self.pod, config("d", api_pb2.NODE, ["sleep", "4444"]))
        _, seen, _ = yield self.exec_sync(second, "ps", "-o", "pid,args")
        self.assertIn(b"sleep 1111", seen)
        self.assertNotIn(b"sleep 3333", seen)
        _, pid1, _ = yield self.exec_sync(first, "cat", "/proc/1/cmdline")
        self.assertNotIn(b"sleep", pid1)
        _, pid1, _ = yield self.exec_sync(own, "cat", "/proc/1/cmdline")
        self.assertEqual(pid1, b"sleep\x003333\x00")
        _, seen, _ = yield self.exec_sync(host, "ps", "-o", "pid,args")
        self.assertIn(b"sleep 3333", seen)
        self.assertIn(str(os.getpid()).encode(), seen.split())

    @inlineCallbacks
    def test_shared_pid_namespace_exit(self) -> Any:
        """
        A container that is not PID 1 of its own namespace (the host's,
        the pod's) exits when its command does: what it left behind is
        killed, not left holding its output (and its stop) forever.
        """
        for mode in (api_pb2.NODE, api_pb2.POD):
            c = container_config(f"left-{mode}", ["sh", "-c", "sleep 7777 & echo started"], log_path=f"{mode}.log")
            c.linux.security_context.namespace_options.pid = mode
            cid = yield self.start_container(self.pod_id, self.pod, c)
            yield self.wait_for(lambda: self.record(cid).state.status == "exited")
            self.assertEqual(self.record(cid).state.exit_code, 0)
            ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, timeout=30)
            self.assertNotIn(b"sleep 7777", ps.stdout)

    @inlineCallbacks
    def test_stats(self) -> Any:
        """
        A running container has CPU and memory stats, and its writable
        layer's bytes and inodes (what it wrote); ListContainerStats
        filters by labels.
        """
        cid = yield self.start_container(self.pod_id, self.pod, container_config(
            "s", ["sh", "-c", "head -c 3000000 /dev/urandom > /tmp/written; touch /tmp/done; sleep 60"],
            labels={"m": "1"}))
        yield self.wait_for(lambda: self.record(cid).state.running)
        code, _, _ = yield self.exec_sync(cid, "sh", "-c", "for i in $(seq 100); do [ -e /tmp/done ] && exit 0; "
                                                           "sleep 0.1; done; exit 1")
        self.assertEqual(code, 0)
        response = yield self.call(self.cri.runtime.ContainerStats, api_pb2.ContainerStatsRequest(container_id=cid))
        stats = response.stats
        self.assertEqual((stats.attributes.id, stats.attributes.metadata.name), (cid, "s"))
        self.assertGreater(stats.cpu.timestamp, 0)
        self.assertGreater(stats.memory.working_set_bytes.value, 0)
        self.assertGreaterEqual(stats.writable_layer.used_bytes.value, 3000000)
        self.assertGreaterEqual(stats.writable_layer.inodes_used.value, 2)
        self.assertTrue(stats.writable_layer.fs_id.mountpoint)
        for selector, found in (({"m": "1"}, [cid]), ({"m": "2"}, [])):
            listed = yield self.call(self.cri.runtime.ListContainerStats, api_pb2.ListContainerStatsRequest(
                filter=api_pb2.ContainerStatsFilter(label_selector=selector)))
            self.assertEqual([s.attributes.id for s in listed.stats], found)

    @inlineCallbacks
    def test_masked_and_readonly_paths(self) -> Any:
        """
        The security context's masked paths (a file reads empty, a
        directory is empty) and read-only paths replace the runtime's
        lists; without them, the runtime's defaults hold.
        """
        config = container_config("masked", ["sleep", "600"])
        config.linux.security_context.masked_paths.extend(["/etc/group", "/var/www"])
        config.linux.security_context.readonly_paths.append("/tmp")
        cid = yield self.start_container(self.pod_id, self.pod, config)
        code, out, _ = yield self.exec_sync(cid, "cat", "/etc/group")
        self.assertEqual((code, out), (0, b""))
        _, out, _ = yield self.exec_sync(cid, "sh", "-c", "touch /var/www/x; ls -A /var/www")
        self.assertEqual(out, b"")
        code, _, err = yield self.exec_sync(cid, "touch", "/tmp/x")
        self.assertEqual((code, err), (1, b"touch: /tmp/x: Read-only file system\n"))
        # The lists replace the defaults: /proc/sys is not read-only here.
        _, out, _ = yield self.exec_sync(cid, "sh", "-c", "grep ' /proc/sys ' /proc/mounts || echo none")
        self.assertEqual(out, b"none\n")
        plain = yield self.start_container(self.pod_id, self.pod, container_config("plain", ["sleep", "600"]))
        code, out, _ = yield self.exec_sync(plain, "sh", "-c", "cat /etc/group | wc -c; touch /tmp/x")
        self.assertEqual(code, 0)
        self.assertGreater(int(out), 0)
        _, out, _ = yield self.exec_sync(plain, "sh", "-c", "grep ' /proc/sys ' /proc/mounts")
        self.assertIn(b" ro,", out)

    @inlineCallbacks
    def test_seccomp(self) -> Any:
        """
        A Localhost seccomp profile filters the container's processes, but
        for a privileged container, which runs unconfined whatever its
        profile says.
        """
        profile = os.path.abspath(self.mktemp())
        with open(profile, "w") as f:
            json.dump({"defaultAction": "SCMP_ACT_ALLOW",
                       "syscalls": [{"names": ["sethostname"], "action": "SCMP_ACT_ERRNO"}]}, f)
        pod_id, pod = yield self.run_pod(pod_config(hostname="before"))
        codes = []
        for privileged in (False, True):
            c = container_config(f"seccomp-{privileged}", ["sleep", "600"])
            sc = c.linux.security_context
            sc.privileged = privileged
            sc.capabilities.add_capabilities.append("SYS_ADMIN")
            sc.seccomp.profile_type = api_pb2.SecurityProfile.Localhost
            sc.seccomp.localhost_ref = profile
            cid = yield self.start_container(pod_id, pod, c)
            code, _, _ = yield self.exec_sync(cid, "hostname", f"name-{privileged}")
            codes.append(code)
        self.assertEqual(codes, [1, 0])

    @inlineCallbacks
    def test_update_resources(self) -> Any:
        """
        UpdateContainerResources writes the new limits into the running
        container's cgroups (v1 or v2, as the host has them) and its
        status reports them.
        """
        config = container_config("limited", ["sleep", "600"])
        config.linux.resources.memory_limit_in_bytes = 128 << 20
        cid = yield self.start_container(self.pod_id, self.pod, config)
        status = yield self.status(cid)
        self.assertEqual(status.resources.linux.memory_limit_in_bytes, 128 << 20)
        yield self.call(self.cri.runtime.UpdateContainerResources, api_pb2.UpdateContainerResourcesRequest(
            container_id=cid, linux=api_pb2.LinuxContainerResources(
                memory_limit_in_bytes=64 << 20, cpu_period=100_000, cpu_quota=50_000, cpu_shares=512)))
        status = yield self.status(cid)
        linux = status.resources.linux
        self.assertEqual((linux.memory_limit_in_bytes, linux.cpu_quota, linux.cpu_period, linux.cpu_shares),
                         (64 << 20, 50_000, 100_000, 512))
        _, out, _ = yield self.exec_sync(cid, "sh", "-c", "cat /sys/fs/cgroup/memory/memory.limit_in_bytes "
                                                          "/sys/fs/cgroup/memory.max 2>/dev/null")
        self.assertEqual(out.split()[0], str(64 << 20).encode())
        # A quota without its period is of the default period (crictl
        # update --cpu-quota).
        yield self.call(self.cri.runtime.UpdateContainerResources, api_pb2.UpdateContainerResourcesRequest(
            container_id=cid, linux=api_pb2.LinuxContainerResources(memory_limit_in_bytes=64 << 20,
                                                                    cpu_quota=20_000)))
        status = yield self.status(cid)
        self.assertEqual((status.resources.linux.cpu_quota, status.resources.linux.cpu_period), (20_000, 100_000))
        # What an update leaves at zero stays (as containerd merges it, and
        # as the cgroup keeps it): the status shows the kernel's limits.
        yield self.call(self.cri.runtime.UpdateContainerResources, api_pb2.UpdateContainerResourcesRequest(
            container_id=cid, linux=api_pb2.LinuxContainerResources(cpu_shares=256)))
        status = yield self.status(cid)
        linux = status.resources.linux
        self.assertEqual((linux.memory_limit_in_bytes, linux.cpu_quota, linux.cpu_shares), (64 << 20, 20_000, 256))
        _, out, _ = yield self.exec_sync(cid, "sh", "-c", "cat /sys/fs/cgroup/memory/memory.limit_in_bytes "
                                                          "/sys/fs/cgroup/memory.max 2>/dev/null")
        self.assertEqual(out.split()[0], str(64 << 20).encode())
        code = yield self.failure_code(self.cri.runtime.UpdateContainerResources,
                                       api_pb2.UpdateContainerResourcesRequest(container_id="0" * 64))
        self.assertEqual(code, grpc.StatusCode.NOT_FOUND)

    @inlineCallbacks
    def test_pod_stats(self) -> Any:
        """
        PodSandboxStats sums its containers' and sandbox's CPU, memory and
        processes, gives each running container's stats and the pod's
        network; ListPodSandboxStats filters by ID and labels.
        """
        first = yield self.start_container(self.pod_id, self.pod, container_config("a", ["sleep", "600"]))
        second = yield self.start_container(self.pod_id, self.pod, container_config("b", ["sleep", "600"]))
        # Sent, never answered: the only traffic of the pod (its links have
        # no IPv6), so what it sent is this. Debian's static busybox wget
        # crashes before sending anything.
        yield self.exec_sync(first, "ping", "-c", "1", "-W", "1", "10.255.255.1")
        response = yield self.call(self.cri.runtime.PodSandboxStats,
                                   api_pb2.PodSandboxStatsRequest(pod_sandbox_id=self.pod_id))
        stats = response.stats
        self.assertEqual((stats.attributes.id, stats.attributes.metadata.name),
                         (self.pod_id, self.pod.metadata.name))
        linux = stats.linux
        self.assertEqual(sorted(c.attributes.id for c in linux.containers), sorted([first, second]))
        self.assertGreaterEqual(linux.memory.working_set_bytes.value,
                                sum(c.memory.working_set_bytes.value for c in linux.containers))
        self.assertGreater(linux.cpu.usage_core_nano_seconds.value, 0)
        self.assertGreaterEqual(linux.process.process_count.value, 3)
        self.assertEqual(linux.network.default_interface.name, "eth0")
        self.assertGreater(linux.network.default_interface.tx_bytes.value, 0)
        for f, found in [(None, [self.pod_id]), (api_pb2.PodSandboxStatsFilter(id=self.pod_id[:8]), [self.pod_id]),
                         (api_pb2.PodSandboxStatsFilter(label_selector={"no": "such"}), [])]:
            listed = yield self.call(self.cri.runtime.ListPodSandboxStats,
                                     api_pb2.ListPodSandboxStatsRequest(filter=f))
            self.assertEqual([s.attributes.id for s in listed.stats], found)

    @inlineCallbacks
    def test_metrics(self) -> Any:
        """
        ListMetricDescriptors describes cAdvisor's metrics (help, labels);
        ListPodSandboxMetrics gives a ready pod's network and each running
        container's, with as many label values as its descriptor has
        keys, and values read from the container: its limits, processes,
        what it wrote, what its pod sent.
        """
        described = yield self.call(self.cri.runtime.ListMetricDescriptors, api_pb2.ListMetricDescriptorsRequest())
        keys = {d.name: list(d.label_keys) for d in described.descriptors}
        self.assertTrue(all(d.help and d.label_keys for d in described.descriptors))
        self.assertIn("container_memory_working_set_bytes", keys)
        config = container_config("measured", ["sh", "-c", "sleep 600 & sleep 600; true"])
        config.linux.resources.memory_limit_in_bytes = 96 << 20
        config.linux.resources.cpu_shares = 512
        cid = yield self.start_container(self.pod_id, self.pod, config)
        yield self.exec_sync(cid, "sh", "-c", "head -c 1000000 /dev/zero > /written")
        yield self.exec_sync(cid, "ping", "-c", "1", "-W", "1", "10.255.255.1")
        listed = yield self.call(self.cri.runtime.ListPodSandboxMetrics, api_pb2.ListPodSandboxMetricsRequest())
        pods = {p.pod_sandbox_id: p for p in listed.pod_metrics}
        pod = pods[self.pod_id]
        values: dict[str, int] = {}
        for metric in [*pod.metrics, *(m for c in pod.container_metrics if c.container_id == cid for m in c.metrics)]:
            self.assertEqual(len(metric.label_values), len(keys[metric.name]), metric.name)
            labels = dict(zip(keys[metric.name], metric.label_values))
            if labels.get("interface", "eth0") == "eth0" and labels.get("failure_type", "pgfault") == "pgfault":
                values.setdefault(metric.name, metric.value.value)
        self.assertEqual([c.container_id for c in pod.container_metrics], [cid])
        self.assertEqual(values["container_spec_memory_limit_bytes"], 96 << 20)
        self.assertEqual(values["container_spec_cpu_shares"], 512)
        self.assertEqual(values["container_processes"], 3)
        self.assertGreaterEqual(values["container_threads"], 3)
        self.assertGreater(values["container_memory_usage_bytes"], 0)
        self.assertGreaterEqual(values["container_fs_usage_bytes"], 1000000)
        self.assertGreater(values["container_fs_limit_bytes"], values["container_fs_usage_bytes"])
        self.assertGreater(values["container_network_transmit_bytes_total"], 0)
        self.assertLessEqual(abs(values["container_start_time_seconds"] - time.time()), 120)
        for name in keys:
            if not name.startswith(("container_fs_reads", "container_fs_writes", "container_blkio")):
                self.assertIn(name, values)

    @inlineCallbacks
    def test_container_events(self) -> Any:
        """
        GetContainerEvents streams created, started, stopped and deleted
        for a pod's containers (and its sandbox), each with the pod's
        status and its containers' as they were then; other engine
        containers' events are not the CRI's.
        """
        bus = self.daemon.engine.containers.events
        subscribers = bus.subscriber_count
        stream = self.cri.runtime.GetContainerEvents(api_pb2.GetEventsRequest(), timeout=60)
        self.addCleanup(stream.cancel)
        events: list[Any] = []

        def read() -> None:
            try:
                for event in stream:
                    events.append(event)
            except grpc.RpcError:
                pass

        reader = deferToThread(read)
        yield self.wait_for(lambda: bus.subscriber_count > subscribers)
        cid = yield self.start_container(self.pod_id, self.pod, container_config("ev", ["sleep", "600"]))
        yield self.call(self.cri.runtime.StopContainer, api_pb2.StopContainerRequest(container_id=cid, timeout=0))
        yield self.call(self.cri.runtime.RemoveContainer, api_pb2.RemoveContainerRequest(container_id=cid))
        yield self.wait_for(lambda: len(events) >= 4)
        self.assertEqual([(e.container_id, e.container_event_type) for e in events[:4]], [
            (cid, api_pb2.CONTAINER_CREATED_EVENT), (cid, api_pb2.CONTAINER_STARTED_EVENT),
            (cid, api_pb2.CONTAINER_STOPPED_EVENT), (cid, api_pb2.CONTAINER_DELETED_EVENT)])
        self.assertEqual({e.pod_sandbox_status.id for e in events[:4]}, {self.pod_id})
        started = events[1]
        self.assertEqual([(s.id, s.state) for s in started.containers_statuses],
                         [(cid, api_pb2.CONTAINER_RUNNING)])
        self.assertEqual(events[3].containers_statuses, [])
        self.assertTrue(all(e.created_at > 0 for e in events))
        yield self.call(self.cri.runtime.StopPodSandbox, api_pb2.StopPodSandboxRequest(pod_sandbox_id=self.pod_id))
        yield self.wait_for(lambda: any(e.container_id == self.pod_id for e in events[4:]))
        self.assertEqual({e.container_event_type for e in events[4:] if e.container_id == self.pod_id},
                         {api_pb2.CONTAINER_STOPPED_EVENT})
        stream.cancel()
        yield reader
        # The client gone, the stream lets go of the bus.
        yield self.wait_for(lambda: bus.subscriber_count == subscribers)

    @inlineCallbacks
    def test_readonly_mounts(self) -> Any:
        """
        A read-only mount is read-only itself, and its submounts too only
        when recursive_read_only (which needs read-only and private
        propagation); Status says recursive read-only mounts are served;
        a missing host path is made.
        """
        source = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(source, "tmpfs"))
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", os.path.join(source, "tmpfs")], check=True, timeout=30)
        self.addCleanup(subprocess.run, ["umount", "-l", os.path.join(source, "tmpfs")], timeout=30)
        missing = os.path.abspath(self.mktemp())
        results = {}
        for recursive in (False, True):
            c = container_config(f"ro-{recursive}", ["sleep", "600"], mounts=[
                api_pb2.Mount(host_path=source, container_path="/mnt", readonly=True, recursive_read_only=recursive),
                api_pb2.Mount(host_path=f"{missing}-{recursive}", container_path="/made")])
            cid = yield self.start_container(self.pod_id, self.pod, c)
            top, _, _ = yield self.exec_sync(cid, "touch", "/mnt/file")
            sub, _, _ = yield self.exec_sync(cid, "touch", "/mnt/tmpfs/file")
            status = yield self.status(cid)
            results[recursive] = (top, sub, [m.recursive_read_only for m in status.mounts if m.readonly])
            self.assertTrue(os.path.isdir(f"{missing}-{recursive}"))
        self.assertEqual(results, {False: (1, 0, [False]), True: (1, 1, [True])})
        for mount in (api_pb2.Mount(host_path=source, container_path="/mnt", recursive_read_only=True),
                      api_pb2.Mount(host_path=source, container_path="/mnt", readonly=True, recursive_read_only=True,
                                    propagation=api_pb2.PROPAGATION_HOST_TO_CONTAINER)):
            code = yield self.failure_code(self.cri.runtime.CreateContainer, api_pb2.CreateContainerRequest(
                pod_sandbox_id=self.pod_id, sandbox_config=self.pod,
                config=container_config("rro-bad", ["true"], mounts=[mount])))
            self.assertEqual(code, grpc.StatusCode.INVALID_ARGUMENT)
        response = yield self.call(self.cri.runtime.Status, api_pb2.StatusRequest())
        self.assertTrue(response.runtime_handlers[0].features.recursive_read_only_mounts)

    @inlineCallbacks
    def test_bidirectional_mount(self) -> Any:
        """
        A bidirectional mount of a shared host mount shares what either
        side mounts under it; nothing else the container mounts (its root,
        /proc...) shows on the host.
        """
        source = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(source, "from-host"))
        subprocess.run(["mount", "--bind", source, source], check=True, timeout=30)
        self.addCleanup(subprocess.run, ["umount", "-R", "-l", source], timeout=30)
        subprocess.run(["mount", "--make-rshared", source], check=True, timeout=30)
        before = open("/proc/self/mountinfo").read().count("\n")
        c = container_config("shared", ["sleep", "600"], mounts=[api_pb2.Mount(
            host_path=source, container_path="/mnt", propagation=api_pb2.PROPAGATION_BIDIRECTIONAL)])
        c.linux.security_context.privileged = True
        cid = yield self.start_container(self.pod_id, self.pod, c)
        self.assertEqual(open("/proc/self/mountinfo").read().count("\n"), before)
        code, _, err = yield self.exec_sync(cid, "sh", "-c", "mkdir /mnt/from-container && "
                                            "mount -t tmpfs tmpfs /mnt/from-container && "
                                            "touch /mnt/from-container/made-inside")
        self.assertEqual((code, err), (0, b""))
        self.assertTrue(os.path.exists(os.path.join(source, "from-container", "made-inside")))
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", os.path.join(source, "from-host")], check=True, timeout=30)
        open(os.path.join(source, "from-host", "made-outside"), "w").close()
        _, out, _ = yield self.exec_sync(cid, "ls", "/mnt/from-host")
        self.assertEqual(out, b"made-outside\n")

    @inlineCallbacks
    def test_bad_input(self) -> Any:
        """
        An unknown pod or container is NOT_FOUND (but stopping one, which
        is idempotent), a config without a name or an image
        INVALID_ARGUMENT, an image that is not here NOT_FOUND, an image
        volume UNIMPLEMENTED; nothing is made.
        """
        before = set(self.daemon.engine.containers.records)

        def create(pod_id: str, config: api_pb2.ContainerConfig) -> api_pb2.CreateContainerRequest:
            return api_pb2.CreateContainerRequest(pod_sandbox_id=pod_id, config=config, sandbox_config=self.pod)

        image_volume = container_config("c", ["true"], mounts=[api_pb2.Mount(
            container_path="/mnt", readonly=True, image=api_pb2.ImageSpec(image="busybox"))])
        for request, expected in [
            (create("0" * 64, container_config("c", ["true"])), grpc.StatusCode.NOT_FOUND),
            (create(self.pod_id, image_volume), grpc.StatusCode.UNIMPLEMENTED),
            (create(self.pod_id, container_config("", ["true"])), grpc.StatusCode.INVALID_ARGUMENT),
            (create(self.pod_id, container_config("c", ["true"], image="")), grpc.StatusCode.INVALID_ARGUMENT),
            (create(self.pod_id, container_config("c", ["true"], image="not/here:1")), grpc.StatusCode.NOT_FOUND),
            # The log stays in the pod's log directory.
            (create(self.pod_id, container_config("c", ["true"], log_path="../escaped.log")),
             grpc.StatusCode.INVALID_ARGUMENT),
            (create(self.pod_id, container_config("c", ["true"], log_path="/etc/escaped.log")),
             grpc.StatusCode.INVALID_ARGUMENT),
        ]:
            code = yield self.failure_code(self.cri.runtime.CreateContainer, request)
            self.assertEqual(code, expected, request)
        for fn, lookup in [
            (self.cri.runtime.StartContainer, api_pb2.StartContainerRequest(container_id="0" * 64)),
            (self.cri.runtime.ContainerStatus, api_pb2.ContainerStatusRequest(container_id="0" * 64)),
            (self.cri.runtime.ExecSync, api_pb2.ExecSyncRequest(container_id="0" * 64, cmd=["true"])),
            # A pod is not a container.
            (self.cri.runtime.ContainerStatus, api_pb2.ContainerStatusRequest(container_id=self.pod_id)),
        ]:
            code = yield self.failure_code(fn, lookup)
            self.assertEqual(code, grpc.StatusCode.NOT_FOUND, lookup)
        # Stopping is idempotent: one that is not there is stopped.
        yield self.call(self.cri.runtime.StopContainer, api_pb2.StopContainerRequest(container_id="0" * 64))
        self.assertEqual(set(self.daemon.engine.containers.records), before)

    @inlineCallbacks
    def test_remove_pod_removes_containers(self) -> Any:
        """
        Stopping a pod stops its containers; removing it removes them.
        """
        cid = yield self.start_container(self.pod_id, self.pod, container_config("c", ["sleep", "600"]))
        yield self.call(self.cri.runtime.StopPodSandbox, api_pb2.StopPodSandboxRequest(pod_sandbox_id=self.pod_id))
        status = yield self.status(cid)
        self.assertEqual(status.state, api_pb2.CONTAINER_EXITED)
        yield self.call(self.cri.runtime.RemovePodSandbox,
                        api_pb2.RemovePodSandboxRequest(pod_sandbox_id=self.pod_id))
        self.assertEqual(self.daemon.engine.containers.records, {})
