"""
docker's Engine API served by a real daemon, driven by docker's own Python
client (docker-py) and plain HTTP where the wire itself is the point.
"""

from __future__ import annotations

import io
import json
import os
import stat
import tarfile
import urllib.parse
from pathlib import Path
from typing import Any, cast

import docker
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.interfaces import IReactorFromThreads
from twisted.python.failure import Failure

from ross.engine.pipes import Outflow
from ross.errors import NotFound
from ross.testing.containers import sleep
from ross.testing.dockerapi import DockerAPITestCase


class SystemTests(DockerAPITestCase):
    @inlineCallbacks
    def test_socket(self) -> Any:
        """
        docker.sock sits beside ross.sock with the same mode: root's and
        its group's only.
        """
        mode = stat.S_IMODE(os.stat(self.socket_path).st_mode)
        self.assertEqual(mode, stat.S_IMODE(os.stat(self.daemon.socket).st_mode))
        self.assertEqual(mode & 0o007, 0)
        pong = yield self.call(self.docker.ping)
        self.assertTrue(pong)

    @inlineCallbacks
    def test_ping_headers(self) -> Any:
        """
        /_ping answers GET and HEAD with docker's headers, which clients
        negotiate the version and the builder with.
        """
        for method in ("GET", "HEAD"):
            status, headers, body = yield self.http(method, "/_ping")
            self.assertEqual(status, 200)
            self.assertEqual(headers["api-version"], "1.44")
            self.assertEqual(headers["ostype"], "linux")
            self.assertEqual(headers["docker-experimental"], "false")
            self.assertEqual(headers["builder-version"], "1")
            self.assertTrue(headers["server"].startswith("Docker/"))
            self.assertEqual(body, b"OK" if method == "GET" else b"")

    @inlineCallbacks
    def test_versions(self) -> Any:
        """
        Every route answers unversioned and versioned from 1.24; older is
        refused with docker's message, newer is answered as 1.44.
        """
        for url in ("/version", "/v1.24/version", "/v1.44/version", "/v1.51/version"):
            status, headers, body = yield self.http("GET", url)
            self.assertEqual(status, 200, url)
            self.assertEqual(json.loads(body)["ApiVersion"], "1.44")
            self.assertEqual(json.loads(body)["MinAPIVersion"], "1.24")
        status, _, body = yield self.http("GET", "/v1.23/version")
        self.assertEqual(status, 400)
        self.assertIn("client version 1.23 is too old", json.loads(body)["message"])
        status, _, body = yield self.http("GET", "/v1.44/nothing/here")
        self.assertEqual((status, json.loads(body)), (404, {"message": "page not found"}))

    @inlineCallbacks
    def test_info(self) -> Any:
        """
        /info counts containers and images and says swarm is inactive (so
        compose does not try swarm).
        """
        container = yield self.call(self.docker.create_container, "busybox", "true")
        info = yield self.call(self.docker.info)
        self.assertEqual(info["Swarm"]["LocalNodeState"], "inactive")
        self.assertEqual(info["Containers"], 1)
        self.assertEqual(info["ContainersStopped"], 1)
        self.assertEqual(info["Images"], 1)
        self.assertEqual(info["OSType"], "linux")
        self.assertEqual(info["DockerRootDir"], str(self.daemon.root))
        yield self.call(self.docker.remove_container, container["Id"])

    @inlineCallbacks
    def test_errors(self) -> Any:
        """
        Engine errors are docker's codes with {"message": ...} bodies, as
        docker-py turns them into its exceptions.
        """
        error = yield self.assertFailure(self.call(self.docker.inspect_container, "nosuch"), docker.errors.NotFound)
        self.assertIn("No such container: nosuch", str(error))
        status, headers, body = yield self.http("POST", "/containers/create", b"not json",
                                                {"Content-Type": "application/json"})
        self.assertEqual(status, 400)
        self.assertIn("invalid JSON", json.loads(body)["message"])
        # Nested past Python's recursion limit: a RecursionError was a 500.
        deep = b'{"Image": "busybox", "Labels": ' + b"[" * 100000 + b"]" * 100000 + b"}"
        status, _, body = yield self.http("POST", "/containers/create", deep, {"Content-Type": "application/json"})
        self.assertEqual((status, json.loads(body)["message"]),
                         (400, "invalid JSON in the request body: nested too deeply"))
        status, _, body = yield self.http("GET", "/containers/json?filters=" + "%5B" * 2000 + "%5D" * 2000)
        self.assertEqual(status, 400)
        self.assertIn("invalid filters", json.loads(body)["message"])
        # A long query (3000 names: 60 KB) is answered, as docker's server
        # does up to 1 MB; twisted.web's 16 KB limit closed the connection.
        names = json.dumps({"name": {f"nosuch-{i:08d}": True for i in range(3000)}})
        status, _, body = yield self.http("GET", "/containers/json?all=1&filters=" + urllib.parse.quote(names))
        self.assertEqual((status, json.loads(body)), (200, []))
        status, _, body = yield self.http("POST", "/containers/create", json.dumps({"Image": "nosuch"}).encode(),
                                          {"Content-Type": "application/json"})
        self.assertEqual(status, 404)
        self.assertIn("No such image", json.loads(body)["message"])
        status, _, body = yield self.http("POST", "/containers/create",
                                          json.dumps({"Image": "busybox", "Cmd": "true",
                                                      "HostConfig": {"Memory": "lots"}}).encode(),
                                          {"Content-Type": "application/json"})
        self.assertEqual(status, 400)
        self.assertIn("Memory", json.loads(body)["message"])
        # A missing network is no missing image (docker's CLI pulls on a
        # 404 from create): 400, and no container.
        for body in ({"HostConfig": {"NetworkMode": "nosuchnet"}},
                     {"NetworkingConfig": {"EndpointsConfig": {"nosuchnet": {}}}}):
            status, _, answer = yield self.http("POST", "/containers/create",
                                                json.dumps({"Image": "busybox", "Cmd": ["true"], **body}).encode(),
                                                {"Content-Type": "application/json"})
            self.assertEqual((status, json.loads(answer)["message"]), (400, "network nosuchnet not found"), body)
        self.assertEqual(self.daemon.engine.containers.records, {})


class ContainerTests(DockerAPITestCase):
    def run_container(self, *command: str, **options: Any) -> Any:
        """
        Create and start a container (blocking); its ID.
        """
        container = self.docker.create_container("busybox", list(command), **options)
        self.docker.start(container["Id"])
        return container["Id"]

    @inlineCallbacks
    def test_create_inspect(self) -> Any:
        """
        docker's create config (env, labels, ports, binds, anonymous
        volumes, restart policy, health check) comes back in inspect in
        docker's schema, with the image's defaults merged.
        """
        bind = os.path.abspath(self.mktemp())
        os.makedirs(bind)
        host_config = self.docker.create_host_config(
            binds={bind: {"bind": "/bound", "mode": "ro"}}, port_bindings={80: None},
            restart_policy={"Name": "on-failure", "MaximumRetryCount": 2}, mem_limit="64m", oom_score_adj=321,
            shm_size="8m", ulimits=[{"Name": "nofile", "Soft": 1000, "Hard": 2000}], ipc_mode="shareable",
            sysctls={"net.ipv4.ip_forward": "1"}, devices=["/dev/zero:/dev/z:rw"])
        created = yield self.call(
            self.docker.create_container, "busybox", ["sleep", "60"], name="c1", environment={"A": "1"},
            labels={"app": "web"}, ports=[80], volumes=["/data"], host_config=host_config, working_dir="/tmp",
            healthcheck={"test": ["CMD", "true"], "interval": 1_000_000_000})
        inspect = yield self.call(self.docker.inspect_container, "c1")
        self.assertEqual(inspect["Id"], created["Id"])
        self.assertEqual(inspect["Name"], "/c1")
        self.assertEqual(inspect["State"]["Status"], "created")
        self.assertEqual(inspect["Path"], "sleep")
        self.assertEqual(inspect["Args"], ["60"])
        config = inspect["Config"]
        self.assertIn("A=1", config["Env"])
        self.assertTrue(any(e.startswith("PATH=") for e in config["Env"]))
        self.assertEqual(config["Labels"], {"app": "web"})
        self.assertEqual(config["ExposedPorts"], {"80/tcp": {}})
        self.assertEqual(config["WorkingDir"], "/tmp")
        self.assertEqual(config["Image"], "busybox")
        self.assertEqual(config["Healthcheck"]["Test"], ["CMD", "true"])
        host = inspect["HostConfig"]
        self.assertEqual(host["RestartPolicy"], {"Name": "on-failure", "MaximumRetryCount": 2})
        self.assertEqual(host["Memory"], 64 * 1024 * 1024)
        self.assertEqual(host["OomScoreAdj"], 321)
        self.assertEqual(host["ShmSize"], 8 * 1024 * 1024)
        self.assertEqual(host["Ulimits"], [{"Name": "nofile", "Soft": 1000, "Hard": 2000}])
        self.assertEqual(host["Devices"], [{"PathOnHost": "/dev/zero", "PathInContainer": "/dev/z",
                                            "CgroupPermissions": "rw"}])
        self.assertEqual((host["IpcMode"], host["Sysctls"]), ("private", {"net.ipv4.ip_forward": "1"}))
        self.assertEqual(host["Binds"], [f"{bind}:/bound:ro"])
        mounts = {m["Destination"]: m for m in inspect["Mounts"]}
        self.assertEqual(mounts["/bound"]["Type"], "bind")
        self.assertFalse(mounts["/bound"]["RW"])
        self.assertEqual(mounts["/data"]["Type"], "volume")
        borrower = yield self.call(self.docker.create_container, "busybox", ["true"], name="c2",
                                   host_config=self.docker.create_host_config(volumes_from=["c1:ro"]))
        borrowed = yield self.call(self.docker.inspect_container, borrower["Id"])
        self.assertEqual(borrowed["HostConfig"]["VolumesFrom"], ["c1:ro"])
        self.assertEqual({m["Destination"]: m["RW"] for m in borrowed["Mounts"]}, {"/bound": False, "/data": False})
        yield self.call(self.docker.start, "c1")
        inspect = yield self.call(self.docker.inspect_container, "c1")
        self.assertTrue(inspect["State"]["Running"])
        self.assertGreater(inspect["State"]["Pid"], 0)
        bridge = inspect["NetworkSettings"]["Networks"]["bridge"]
        self.assertTrue(bridge["IPAddress"])
        self.assertEqual(inspect["NetworkSettings"]["IPAddress"], bridge["IPAddress"])
        published = inspect["NetworkSettings"]["Ports"]["80/tcp"]
        self.assertTrue(int(published[0]["HostPort"]) > 0)
        yield self.call(self.docker.remove_container, "c1", force=True, v=True)

    @inlineCallbacks
    def test_lifecycle_codes(self) -> Any:
        """
        Start of a running and stop of a stopped container are 304 (docker-py
        takes them quietly); kill of a stopped one and removal of a running
        one 409; wait gives the exit code.
        """
        cid = yield self.call(self.run_container, "sleep", "60")
        status, _, _ = yield self.http("POST", f"/v1.44/containers/{cid}/start")
        self.assertEqual(status, 304)
        error = yield self.assertFailure(self.call(self.docker.remove_container, cid), docker.errors.APIError)
        self.assertEqual(error.status_code, 409)
        yield self.call(self.docker.pause, cid)
        inspect = yield self.call(self.docker.inspect_container, cid)
        self.assertTrue(inspect["State"]["Paused"])
        yield self.call(self.docker.unpause, cid)
        yield self.call(self.docker.kill, cid, signal="KILL")
        result = yield self.call(self.docker.wait, cid, timeout=30)
        self.assertEqual(result["StatusCode"], 137)
        status, _, _ = yield self.http("POST", f"/containers/{cid}/stop")
        self.assertEqual(status, 304)
        error = yield self.assertFailure(self.call(self.docker.kill, cid), docker.errors.APIError)
        self.assertEqual(error.status_code, 409)
        yield self.call(self.docker.rename, cid, "renamed")
        inspect = yield self.call(self.docker.inspect_container, "renamed")
        self.assertEqual(inspect["Id"], cid)
        updated = yield self.call(self.docker.update_container, cid, restart_policy={"Name": "always"})
        self.assertEqual(updated, {"Warnings": []})
        inspect = yield self.call(self.docker.inspect_container, cid)
        self.assertEqual(inspect["HostConfig"]["RestartPolicy"]["Name"], "always")
        error = yield self.assertFailure(self.call(self.docker.update_container, cid, blkio_weight=500),
                                         docker.errors.APIError)
        self.assertEqual(error.status_code, 501)
        yield self.call(self.docker.update_container, cid, mem_limit="64m")
        inspect = yield self.call(self.docker.inspect_container, cid)
        self.assertEqual(inspect["HostConfig"]["Memory"], 64 * 1024 * 1024)
        self.assertEqual(inspect["HostConfig"]["RestartPolicy"]["Name"], "always")
        yield self.call(self.docker.update_container, cid, restart_policy={"Name": "no"})
        yield self.call(self.docker.restart, cid, timeout=1)
        inspect = yield self.call(self.docker.inspect_container, cid)
        self.assertTrue(inspect["State"]["Running"])
        yield self.call(self.docker.stop, cid, timeout=1)
        yield self.call(self.docker.remove_container, cid)
        self.assertEqual(list(self.daemon.engine.containers.records), [])

    @inlineCallbacks
    def test_update_running_limits(self) -> Any:
        """
        docker update changes a running container's memory, CPU shares and
        pids limits in its cgroups at once, and keeps what it was not
        asked to change; a limit refused as at create changes nothing.
        """
        created = yield self.call(self.docker.create_container, "busybox", ["sleep", "60"],
                                  host_config=self.docker.create_host_config(
                                      mem_limit=400 * 1024 * 1024, cpu_shares=2, pids_limit=100))
        cid = created["Id"]
        yield self.call(self.docker.start, cid)
        pid = (yield self.call(self.docker.inspect_container, cid))["State"]["Pid"]

        def limit(controller: str, name: str) -> str:
            for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
                _, controllers, path = line.split(":", 2)
                if controller in controllers.split(","):
                    return (Path("/sys/fs/cgroup") / controllers / path.lstrip("/") / name).read_text().strip()
            raise AssertionError(f"no {controller} cgroup for {pid}")

        self.assertEqual(limit("memory", "memory.limit_in_bytes"), str(400 * 1024 * 1024))
        yield self.call(self.docker.update_container, cid, mem_limit=300 * 1024 * 1024, cpu_shares=3)
        inspect = yield self.call(self.docker.inspect_container, cid)
        self.assertEqual((inspect["HostConfig"]["Memory"], inspect["HostConfig"]["CpuShares"],
                          inspect["HostConfig"]["PidsLimit"]), (300 * 1024 * 1024, 3, 100))
        self.assertEqual(limit("memory", "memory.limit_in_bytes"), str(300 * 1024 * 1024))
        self.assertEqual(limit("cpu", "cpu.shares"), "3")
        self.assertEqual(limit("pids", "pids.max"), "100")
        # Raising memory above the old memory+swap limit needs that one first.
        # (docker-py has no pids_limit in update: docker's CLI sends it so.)
        status, _, body = yield self.http("POST", f"/v1.44/containers/{cid}/update", json.dumps(
            {"Memory": 2000 * 1024 * 1024, "PidsLimit": -1}).encode(), {"Content-Type": "application/json"})
        self.assertEqual(status, 200, body)
        self.assertEqual(limit("memory", "memory.limit_in_bytes"), str(2000 * 1024 * 1024))
        self.assertEqual(limit("pids", "pids.max"), "max")
        error = yield self.assertFailure(self.call(self.docker.update_container, cid, mem_limit=1024 * 1024),
                                         docker.errors.APIError)
        self.assertEqual(error.status_code, 400)
        self.assertEqual(limit("memory", "memory.limit_in_bytes"), str(2000 * 1024 * 1024))
        inspect = yield self.call(self.docker.inspect_container, cid)
        self.assertEqual(inspect["HostConfig"]["Memory"], 2000 * 1024 * 1024)
        yield self.call(self.docker.remove_container, cid, force=True)

    @inlineCallbacks
    def test_wait_conditions(self) -> Any:
        """
        wait with condition next-exit waits for the next run's exit, and
        removed for the removal of an auto-removed container.
        """
        created = yield self.call(self.docker.create_container, "busybox", ["sh", "-c", "exit 5"],
                                  host_config=self.docker.create_host_config(auto_remove=True))
        cid = created["Id"]
        waiting = self.call(self.docker.wait, cid, timeout=30, condition="removed")
        yield sleep(0.2)
        yield self.call(self.docker.start, cid)
        result = yield waiting
        self.assertEqual(result["StatusCode"], 5)
        self.assertNotIn(cid, self.daemon.engine.containers.records)

    @inlineCallbacks
    def test_list_filters(self) -> Any:
        """
        /containers/json lists running containers (all with all=1) with
        docker's summary, and filters by label, status, name and ID.
        """
        running = yield self.call(self.run_container, "sleep", "60", labels={"tier": "front"}, name="front")
        stopped = yield self.call(self.docker.create_container, "busybox", "true", labels={"tier": "back"},
                                  name="back")
        listed = yield self.call(self.docker.containers)
        self.assertEqual([c["Id"] for c in listed], [running])
        summary = listed[0]
        self.assertEqual(summary["Names"], ["/front"])
        self.assertEqual(summary["Image"], "busybox")
        self.assertEqual(summary["State"], "running")
        self.assertTrue(summary["Status"].startswith("Up"))
        self.assertEqual(summary["Command"], "sleep 60")
        everything = yield self.call(self.docker.containers, all=True)
        self.assertEqual({c["Id"] for c in everything}, {running, stopped["Id"]})
        for filters, expected in [({"label": "tier=back"}, [stopped["Id"]]), ({"status": "running"}, [running]),
                                  ({"name": "fro"}, [running]), ({"id": stopped["Id"][:12]}, [stopped["Id"]])]:
            found = yield self.call(self.docker.containers, all=True, filters=filters)
            self.assertEqual([c["Id"] for c in found], expected, filters)
        error = yield self.assertFailure(self.call(self.docker.containers, filters={"bogus": "x"}),
                                         docker.errors.APIError)
        self.assertEqual(error.status_code, 400)
        pruned = yield self.call(self.docker.prune_containers)
        self.assertEqual(pruned["ContainersDeleted"], [stopped["Id"]])
        yield self.call(self.docker.remove_container, running, force=True)

    @inlineCallbacks
    def test_logs(self) -> Any:
        """
        Logs come in docker's frames, stdout and stderr apart, with tail
        and timestamps; follow streams until the container exits.
        """
        cid = yield self.call(self.run_container, "sh", "-c", "echo out1; echo err1 >&2; echo out2")
        yield self.call(self.docker.wait, cid, timeout=30)
        out = yield self.call(self.docker.logs, cid, stdout=True, stderr=False)
        self.assertEqual(out, b"out1\nout2\n")
        err = yield self.call(self.docker.logs, cid, stdout=False, stderr=True)
        self.assertEqual(err, b"err1\n")
        # tail counts the lines of both streams, as docker's: the last of
        # them is stdout's or stderr's as they arrived.
        tail = yield self.call(self.docker.logs, cid, tail=1)
        self.assertIn(tail, (b"out2\n", b"err1\n"))
        stamped = yield self.call(self.docker.logs, cid, stdout=True, stderr=False, timestamps=True)
        first = stamped.splitlines()[0].split(b" ", 1)
        self.assertEqual(first[1], b"out1")
        self.assertTrue(first[0].endswith(b"Z"))
        follower = yield self.call(self.run_container, "sh", "-c", "for i in 1 2 3; do echo n$i; sleep 0.2; done")

        def follow() -> bytes:
            return b"".join(self.docker.logs(follower, stream=True, follow=True))

        followed = yield self.call(follow)
        self.assertEqual(followed, b"n1\nn2\nn3\n")
        for container in (cid, follower):
            yield self.call(self.docker.remove_container, container)

    @inlineCallbacks
    def test_top_stats_changes(self) -> Any:
        """
        top lists the container's processes, stats gives docker's counters
        (one-shot and streamed), changes its filesystem's.
        """
        cid = yield self.call(self.run_container, "sh", "-c", "touch /made; sleep 60")
        top = yield self.call(self.docker.top, cid)
        self.assertIn("PID", top["Titles"])
        self.assertTrue(any("sleep 60" in " ".join(p) for p in top["Processes"]))
        stats = yield self.call(self.docker.stats, cid, stream=False)
        self.assertEqual(stats["id"], cid)
        self.assertGreater(stats["memory_stats"]["usage"], 0)
        self.assertGreater(stats["cpu_stats"]["system_cpu_usage"], 0)
        self.assertGreater(stats["pids_stats"]["current"], 0)

        def two_samples() -> list[Any]:
            stream = self.docker.stats(cid, decode=True)
            return [next(stream), next(stream)]

        samples = yield self.call(two_samples)
        self.assertEqual(samples[1]["precpu_stats"]["cpu_usage"]["total_usage"],
                         samples[0]["cpu_stats"]["cpu_usage"]["total_usage"])
        yield self.wait_for(lambda: True)
        changes = yield self.call(self.docker.diff, cid)
        self.assertIn({"Path": "/made", "Kind": 1}, changes)
        yield self.call(self.docker.remove_container, cid, force=True)
        # No change at all: an empty list (an empty 204 broke docker's CLI).
        created = yield self.call(self.docker.create_container, "busybox", ["true"])
        changes = yield self.call(self.docker.diff, created["Id"])
        self.assertEqual(changes, [])
        yield self.call(self.docker.remove_container, created["Id"], force=True)

    @inlineCallbacks
    def test_stats_of_removed_container_end(self) -> Any:
        """
        A container removed while its stats stream: the stream ends, as
        docker's does (docker's CLI, given a cut stream instead, keeps
        reading forever).
        """
        cid = yield self.call(self.run_container, "sleep", "60")

        def follow() -> int:
            stream = self.docker.stats(cid, decode=True)
            next(stream)
            self.docker.remove_container(cid, force=True)
            return sum(1 for _ in stream)

        more = yield self.call(follow)
        self.assertLessEqual(more, 2)

    @inlineCallbacks
    def test_archive_export(self) -> Any:
        """
        put_archive and get_archive copy files in and out (docker cp), with
        the path's stat in its header; export is the root filesystem tar.
        """
        cid = yield self.call(self.run_container, "sleep", "60")
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            info = tarfile.TarInfo("hello.txt")
            info.size = 5
            tar.addfile(info, io.BytesIO(b"hello"))
        ok = yield self.call(self.docker.put_archive, cid, "/tmp", buffer.getvalue())
        self.assertTrue(ok)

        def get() -> tuple[bytes, Any]:
            chunks, stat = self.docker.get_archive(cid, "/tmp/hello.txt")
            return b"".join(chunks), stat

        data, path_stat = yield self.call(get)
        self.assertEqual(path_stat["name"], "hello.txt")
        self.assertEqual(path_stat["size"], 5)
        self.assertEqual(path_stat["mode"], 0o644)

        def stat_of(path: str) -> Any:
            chunks, stat = self.docker.get_archive(cid, path)
            b"".join(chunks)
            return stat

        # Go's os.FileMode, which docker's CLI reads: ModeDir | ModeSticky.
        tmp_stat = yield self.call(stat_of, "/tmp")
        self.assertEqual(tmp_stat["mode"], (1 << 31) | (1 << 20) | 0o777)
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            member = tar.extractfile("hello.txt")
            assert member is not None
            self.assertEqual(member.read(), b"hello")
        error = yield self.assertFailure(self.call(get_missing, self.docker, cid), docker.errors.NotFound)
        self.assertIn("nothing", str(error))

        def export() -> list[str]:
            data = b"".join(self.docker.export(cid))
            with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                return tar.getnames()

        names = yield self.call(export)
        self.assertIn("bin/busybox", names)

        # A stream that fails once begun (the container removed during its
        # export) is cut, so that the client sees it fail: its end would
        # read as a whole, shorter tar.
        def failing(ref: str) -> Deferred[Outflow]:
            flow = Outflow(cast(IReactorFromThreads, reactor))
            flow.put(b"x" * 1024)
            flow.fail(Failure(NotFound("the container was removed during the export")))
            return succeed(flow)

        self.patch(self.daemon.engine.containers, "export", failing)

        def export_all() -> bytes:
            return b"".join(self.docker.export(cid))

        yield self.assertFailure(self.call(export_all), Exception)
        yield self.call(self.docker.remove_container, cid, force=True)


def get_missing(client: Any, cid: str) -> Any:
    return client.get_archive(cid, "/nothing")
