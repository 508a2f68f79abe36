"""
Kill points (SPEC 16): the daemon SIGKILLed at every state-writing step of
volume create and rm, image load, import, tag, rmi, prune and commit,
container create, start, stop, rename and rm (L{ross.testing.killpoints}),
then started again on the same root. After each crash the operation is done or not done, never half: every object
listed is whole (an image saves, i.e. every blob is there and matches its
digest; a container's snapshot exists; a volume has its directory), and
nothing is left that no object owns (a blob, a layer or container
snapshot, a volume directory, a container directory).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

import grpc
from twisted.internet.threads import deferToThread
from twisted.python import log
from twisted.trial.unittest import TestCase

from ross.testing.daemon import Clients, DaemonProcess
from ross.testing.images import docker_archive, layer_tar, load_archive
from ross.testing.killpoints import KillableDaemon, listing
from ross.testing.leaks import cgroups_under, mounts_under, processes_mentioning
from ross.v1 import container_pb2, image_pb2, snapshot_pb2, volume_pb2

#: Steps tried per operation at most (each has fewer; the cap only
#: bounds a runaway).
MAX_STEPS = 40
T = 60


def clients_of(daemon: DaemonProcess) -> Clients:
    return Clients(grpc.insecure_channel(f"unix:{daemon.socket}"))


def small_image(base: Path, tag: str, content: str) -> Path:
    """A one-layer image of its own (its blobs and snapshot shared with nothing)."""
    tree = base / f"tree-{tag.replace(':', '-')}"
    tree.mkdir(exist_ok=True)
    (tree / "file").write_text(content)
    return docker_archive(base / f"{tag.replace(':', '-')}.tar", tags=[tag], layers=[layer_tar(tree)]).path


def check_world(testcase: TestCase, daemon: DaemonProcess, c: Clients) -> None:
    """
    Everything listed is whole; nothing on disk is owned by nobody.
    """
    root = daemon.root
    referenced: set[str] = set()
    chains: set[str] = set()
    for image in c.images.ListImages(image_pb2.ListImagesRequest(all=True), timeout=T).images:
        inspected = c.images.InspectImage(image_pb2.InspectImageRequest(name=image.id), timeout=T)
        manifest = json.loads(inspected.manifest_json)
        referenced |= {image.target.digest, manifest["config"]["digest"], *(l["digest"] for l in manifest["layers"])}
        chains.add(inspected.chain_id)
        # Saving reads (and verifies) every blob of the image.
        saved = list(c.images.SaveImages(image_pb2.SaveImagesRequest(names=[image.id]), timeout=T))
        testcase.assertTrue(saved, image.id)
    blobs = {f"sha256:{name}" for name in listing(root / "content" / "blobs" / "sha256")}
    testcase.assertEqual(blobs - referenced, set(), "blobs no image refers to")
    testcase.assertEqual(referenced - blobs, set(), "blobs missing")

    snapshots = {s.name: s for s in c.snapshots.List(snapshot_pb2.ListSnapshotsRequest(), timeout=T).info}
    owned: set[str] = set()
    for chain in chains:
        while chain:
            owned.add(chain)
            chain = snapshots[chain].parent if chain in snapshots else ""
    containers = c.containers.ListContainers(container_pb2.ListContainersRequest(all=True), timeout=T).containers
    cgroups = {os.path.basename(p) for p in cgroups_under(f"ross-test-{daemon.base.name}")}
    for listed in containers:
        container = c.containers.InspectContainer(container_pb2.InspectContainerRequest(
            container_id=listed.id), timeout=T).container
        testcase.assertIn(container.snapshot_key, snapshots, container.name)
        owned.add(container.snapshot_key)
        if container.state.status == container_pb2.CONTAINER_STATUS_RUNNING:
            testcase.assertTrue(os.path.exists(f"/proc/{container.state.pid}"), f"{container.name} runs no process")
        else:
            # Neither a shim nor a cgroup outlives a container's run.
            testcase.assertEqual(processes_mentioning(container.id), [], container.name)
            testcase.assertNotIn(container.id, cgroups, container.name)
    testcase.assertEqual(cgroups - {x.id for x in containers}, set(), "cgroups of no container")
    testcase.assertEqual(set(snapshots) - owned, set(), "snapshots nothing owns")
    testcase.assertEqual(listing(root / "containers") - {x.id for x in containers}, set(),
                         "container directories without a container")

    volumes = {v.name for v in c.volumes.ListVolumes(volume_pb2.ListVolumesRequest(), timeout=T).volumes}
    directories = {n for n in listing(root / "volumes") if not n.startswith("metadata.db")}
    testcase.assertEqual(directories, volumes, "volume directories and records differ")
    for name in volumes:
        testcase.assertTrue(os.path.isdir(root / "volumes" / name / "_data"), name)


#: (what, prepare, operation): prepare (unarmed) makes what the operation
#: needs for subject C{n}; the operation is the one crashed.
Step = Callable[[Clients, Path, str], Any]


def _nothing(c: Clients, base: Path, n: str) -> None:
    return None


def _container(c: Clients, base: Path, n: str, *cmd: str) -> None:
    config = container_pb2.ContainerConfig(image="busybox")
    config.cmd.values.extend(cmd or ["true"])
    c.containers.CreateContainer(container_pb2.CreateContainerRequest(
        name=f"c{n}", config=config, host_config=container_pb2.HostConfig(network_mode="none")), timeout=T)


def _running(c: Clients, base: Path, n: str) -> None:
    _container(c, base, n, "sleep", "1000")
    c.containers.StartContainer(container_pb2.StartContainerRequest(container_id=f"c{n}"), timeout=T)


def _dangling(c: Clients, base: Path, n: str) -> None:
    """An image left without a name: its tag taken by another image."""
    load_archive(c, small_image(base, f"prune{n}:1", f"old {n}"))
    load_archive(c, small_image(base, f"prune{n}:1", f"new {n}"))


def _import(c: Clients, base: Path, n: str) -> None:
    tree = base / f"import-{n}"
    tree.mkdir(exist_ok=True)
    (tree / "file").write_text(f"import {n}")

    def frames() -> Any:
        yield image_pb2.ImportImageRequest(options=image_pb2.ImportOptions(reference=f"imported{n}:1"))
        yield image_pb2.ImportImageRequest(data=layer_tar(tree))

    c.images.ImportImage(frames(), timeout=T)


OPERATIONS: list[tuple[str, Step, Step]] = [
    ("volume create", _nothing,
     lambda c, base, n: c.volumes.CreateVolume(volume_pb2.CreateVolumeRequest(name=f"v{n}"), timeout=T)),
    ("volume rm", lambda c, base, n: c.volumes.CreateVolume(volume_pb2.CreateVolumeRequest(name=f"r{n}"), timeout=T),
     lambda c, base, n: c.volumes.RemoveVolume(volume_pb2.RemoveVolumeRequest(name=f"r{n}"), timeout=T)),
    ("load", _nothing, lambda c, base, n: load_archive(c, small_image(base, f"load{n}:1", f"load {n}"))),
    ("tag", _nothing,
     lambda c, base, n: c.images.TagImage(image_pb2.TagImageRequest(source="busybox", target=f"tag{n}:1"), timeout=T)),
    ("rmi", lambda c, base, n: load_archive(c, small_image(base, f"rmi{n}:1", f"rmi {n}")),
     lambda c, base, n: c.images.RemoveImage(image_pb2.RemoveImageRequest(name=f"rmi{n}:1"), timeout=T)),
    ("image prune", lambda c, base, n: _dangling(c, base, n),
     lambda c, base, n: c.images.PruneImages(image_pb2.PruneImagesRequest(), timeout=T)),
    ("import", _nothing, lambda c, base, n: _import(c, base, n)),
    ("commit", lambda c, base, n: _container(c, base, f"m{n}"),
     lambda c, base, n: c.containers.Commit(container_pb2.CommitRequest(
         container_id=f"cm{n}", reference=f"committed{n}:1"), timeout=T)),
    ("container create", _nothing, lambda c, base, n: _container(c, base, n)),
    ("container rename", lambda c, base, n: _container(c, base, f"r{n}"),
     lambda c, base, n: c.containers.RenameContainer(container_pb2.RenameContainerRequest(
         container_id=f"cr{n}", new_name=f"renamed{n}"), timeout=T)),
    ("container start", lambda c, base, n: _container(c, base, f"s{n}", "sleep", "1000"),
     lambda c, base, n: c.containers.StartContainer(container_pb2.StartContainerRequest(container_id=f"cs{n}"),
                                                    timeout=T)),
    ("container stop", lambda c, base, n: _running(c, base, f"p{n}"),
     lambda c, base, n: c.containers.StopContainer(container_pb2.StopContainerRequest(container_id=f"cp{n}",
                                                                                      timeout=0), timeout=T)),
    ("container rm", lambda c, base, n: _running(c, base, f"x{n}"),
     lambda c, base, n: c.containers.RemoveContainer(container_pb2.RemoveContainerRequest(
         container_id=f"cx{n}", force=True), timeout=T)),
]


class KillPointTests(TestCase):
    """
    One test per operation, each with a daemon of its own: SIGKILL at each
    state-writing step; a restarted daemon finds the operation done or not
    done and nothing half made.
    """

    timeout = 600

    def crash_each_step(self, what: str) -> Any:
        return deferToThread(self.scenario, what)

    def scenario(self, what: str) -> None:
        prepare, operation = next((p, o) for w, p, o in OPERATIONS if w == what)
        daemon = KillableDaemon()
        self.addCleanup(daemon.cleanup)
        daemon.start()
        c = clients_of(daemon)
        self.addCleanup(lambda: c.channel.close())
        archive = docker_archive(daemon.base / "busybox.tar")
        load_archive(c, archive.path)
        killed = []
        for step in range(1, MAX_STEPS + 1):
            subject = f"{what.split()[-1][:2]}{step}"
            prepare(c, daemon.base, subject)
            daemon.arm(step)
            try:
                operation(c, daemon.base, subject)
            except grpc.RpcError as e:
                # The call fails as the daemon dies: give it time to go.
                try:
                    daemon.process.wait(10)  # type: ignore[union-attr]
                except subprocess.TimeoutExpired:
                    raise AssertionError(f"{what} failed without a crash: {e.code().name} {e.details()}")
            daemon.disarm()
            if not daemon.hit():
                # Fewer steps than this: the operation ran to its end.
                break
            killed.append(daemon.hit())
            daemon.process.wait(30)  # type: ignore[union-attr]
            c.channel.close()
            daemon.start()
            c = clients_of(daemon)
            try:
                check_world(self, daemon, c)
            except AssertionError as e:
                raise AssertionError(f"{what}, killed at step {step} ({killed[-1]}): {e}")
        else:
            raise AssertionError(f"{what} still writing after {MAX_STEPS} steps")
        log.msg(f"kill points of {what}: {len(killed)} ({', '.join(killed)})")
        # What is left once every container is gone: nothing of theirs.
        for listed in c.containers.ListContainers(container_pb2.ListContainersRequest(all=True), timeout=T).containers:
            c.containers.RemoveContainer(container_pb2.RemoveContainerRequest(container_id=listed.id, force=True),
                                         timeout=T)
        self.assertEqual(cgroups_under(f"ross-test-{daemon.base.name}"), [])
        self.assertEqual(mounts_under(daemon.root / "snapshots"), [])
        c.channel.close()
        daemon.stop()
        # Nor a shim (the spare one leaves once the daemon has gone).
        deadline = time.monotonic() + 15
        while processes_mentioning(str(daemon.base)) and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertEqual(processes_mentioning(str(daemon.base)), [])
        # Every operation writes something: it was killed at least once.
        self.assertTrue(killed, f"{what} was never killed")

    def test_volume_create(self) -> Any:
        return self.crash_each_step("volume create")

    def test_volume_rm(self) -> Any:
        return self.crash_each_step("volume rm")

    def test_load(self) -> Any:
        return self.crash_each_step("load")

    def test_tag(self) -> Any:
        return self.crash_each_step("tag")

    def test_rmi(self) -> Any:
        return self.crash_each_step("rmi")

    def test_image_prune(self) -> Any:
        return self.crash_each_step("image prune")

    def test_import(self) -> Any:
        return self.crash_each_step("import")

    def test_commit(self) -> Any:
        return self.crash_each_step("commit")

    def test_container_create(self) -> Any:
        return self.crash_each_step("container create")

    def test_container_rename(self) -> Any:
        return self.crash_each_step("container rename")

    def test_container_start(self) -> Any:
        return self.crash_each_step("container start")

    def test_container_stop(self) -> Any:
        return self.crash_each_step("container stop")

    def test_container_rm(self) -> Any:
        return self.crash_each_step("container rm")


class UnrecordedStartTests(TestCase):
    """
    The daemon SIGKILLed at each state-writing step of a container start
    on the default network: after a restart, the start is done when the
    container's command ran (it runs on, or its exit is recorded with its
    code) and not done when it never ran. A client that saw the command's
    output never finds it undone.
    """

    timeout = 600

    def test_runs_on(self) -> Any:
        return deferToThread(self.scenario, "touch /out/$NAME; exec sleep 1000", None)

    def test_exit_recorded(self) -> Any:
        return deferToThread(self.scenario, "touch /out/$NAME; exit 3", 3)

    def scenario(self, script: str, code: int | None) -> None:
        daemon = KillableDaemon()
        self.addCleanup(daemon.cleanup)
        daemon.start()
        c = clients_of(daemon)
        self.addCleanup(lambda: c.channel.close())
        load_archive(c, docker_archive(daemon.base / "busybox.tar").path)
        out = daemon.base / "out"
        out.mkdir()
        ran = []
        for step in range(1, MAX_STEPS + 1):
            name = f"u{step}"
            config = container_pb2.ContainerConfig(image="busybox", env=[f"NAME={name}"])
            config.cmd.values.extend(["sh", "-c", script])
            c.containers.CreateContainer(container_pb2.CreateContainerRequest(
                name=name, config=config, host_config=container_pb2.HostConfig(binds=[f"{out}:/out"])), timeout=T)
            daemon.arm(step)
            try:
                c.containers.StartContainer(container_pb2.StartContainerRequest(container_id=name), timeout=T)
            except grpc.RpcError:
                daemon.process.wait(10)  # type: ignore[union-attr]
            daemon.disarm()
            if not daemon.hit():
                break
            daemon.process.wait(30)  # type: ignore[union-attr]
            c.channel.close()
            daemon.start()
            c = clients_of(daemon)
            where = f"killed at step {step} ({daemon.hit()})"
            # The daemon answers once it has settled every container.
            state = c.containers.InspectContainer(container_pb2.InspectContainerRequest(
                container_id=name), timeout=T).container.state
            if not (out / name).exists():
                self.assertEqual(state.status, container_pb2.CONTAINER_STATUS_CREATED, where)
                continue
            ran.append(step)
            if code is None:
                self.assertEqual(state.status, container_pb2.CONTAINER_STATUS_RUNNING, where)
                with open(f"/proc/{state.pid}/cmdline", "rb") as f:
                    self.assertEqual(f.read(), b"sleep\x001000\x00", where)
            else:
                # A shim that outlived the daemon hands the exit over just
                # after the restart.
                deadline = time.monotonic() + 10
                while state.status != container_pb2.CONTAINER_STATUS_EXITED and time.monotonic() < deadline:
                    time.sleep(0.05)
                    state = c.containers.InspectContainer(container_pb2.InspectContainerRequest(
                        container_id=name), timeout=T).container.state
                self.assertEqual((state.status, state.exit_code), (container_pb2.CONTAINER_STATUS_EXITED, code),
                                 where)
        # The last step of a start records it, after the command began.
        self.assertTrue(ran, "never killed after the command ran")
        for listed in c.containers.ListContainers(container_pb2.ListContainersRequest(all=True), timeout=T).containers:
            c.containers.RemoveContainer(container_pb2.RemoveContainerRequest(container_id=listed.id, force=True),
                                         timeout=T)
        self.assertEqual(cgroups_under(f"ross-test-{daemon.base.name}"), [])
        c.channel.close()
        daemon.stop()
