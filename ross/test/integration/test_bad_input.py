"""
Requests the fuzzer (L{ross.test.integration.test_fuzz}) found answered
with INTERNAL, a traceback or a change of state, kept as plain tests: each
must be refused with the right status code, a message that names the
problem, and nothing changed (SPEC 11).

The daemon runs in-process, so an unexpected error it logs fails the test
too (trial reports logged errors).
"""

from __future__ import annotations

import signal
from typing import Any, Callable, Iterator

import attrs
import grpc
from twisted.internet.defer import Deferred, fail
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from ross.engine.containers.config import PortBinding
from ross.engine.events import EventFilter
from ross.protocols.shim import ShimGone
from ross.testing.containers import ContainerTestCase
from ross.testing.daemon import InProcessDaemon
from ross.v1 import common_pb2, container_pb2, image_pb2


class BadInputTests(TestCase):
    timeout = 120

    async def setUp(self) -> None:  # type: ignore[override]
        self.daemon = InProcessDaemon(self)
        await self.daemon.start()
        self.clients = self.daemon.clients()

    async def refused(self, call: Callable[..., Any], request: Any, code: grpc.StatusCode, words: str) -> None:
        """
        C{call(request)} fails with C{code} and a message containing
        C{words}.
        """
        try:
            await self.daemon.call(call, request, timeout=30)
        except grpc.RpcError as e:
            self.assertEqual(e.code(), code, e.details())
            self.assertIn(words, e.details())
        else:
            self.fail(f"{request} was accepted")

    async def test_login_address_not_a_host(self) -> None:
        """
        A server address urllib cannot split ("[" opens an IPv6 literal
        that never closes) is INVALID_ARGUMENT, not INTERNAL.
        """
        images = self.clients.images
        auth = common_pb2.RegistryAuth(username="u", server_address="x[y")
        await self.refused(images.Login, image_pb2.LoginRequest(auth=auth), grpc.StatusCode.INVALID_ARGUMENT,
                           "invalid registry address")
        auth.server_address = "http://[::1"
        await self.refused(images.Login, image_pb2.LoginRequest(auth=auth), grpc.StatusCode.INVALID_ARGUMENT,
                           "invalid registry address")
        await self.refused(images.Logout, image_pb2.LogoutRequest(server_address="a b"),
                           grpc.StatusCode.INVALID_ARGUMENT, "invalid registry address")

    async def test_oversized_messages(self) -> None:
        """
        A message over the daemon's limit is RESOURCE_EXHAUSTED, unary or
        in a client stream, and the daemon goes on serving.
        """
        from ross.services.grpc_server import MAX_MESSAGE

        huge = "x" * (MAX_MESSAGE + 1)
        await self.refused(self.clients.containers.InspectContainer,
                           container_pb2.InspectContainerRequest(container_id=huge),
                           grpc.StatusCode.RESOURCE_EXHAUSTED, "")

        def load(request: Any, timeout: float) -> Any:
            frames = [image_pb2.LoadImagesRequest(options=image_pb2.LoadOptions()),
                      image_pb2.LoadImagesRequest(data=b"\0" * (MAX_MESSAGE + 1))]
            return self.clients.images.LoadImages(iter(frames), timeout=timeout)

        await self.refused(load, None, grpc.StatusCode.RESOURCE_EXHAUSTED, "")
        listed = await self.daemon.call(self.clients.images.ListImages, image_pb2.ListImagesRequest(), timeout=30)
        self.assertEqual(list(listed.images), [])


class ContainerBadInputTests(ContainerTestCase):
    """
    Found cases that need a container to reach.
    """

    async def refused(self, call: Callable[..., Any], request: Any, code: grpc.StatusCode, words: str) -> None:
        try:
            await deferToThread(call, request, timeout=30)
        except grpc.RpcError as e:
            self.assertEqual(e.code(), code, e.details())
            self.assertIn(words, e.details())
        else:
            self.fail(f"{request} was accepted")

    async def running(self, name: str) -> str:
        """
        The ID of a new container C{name} running C{sleep 1000}, without a
        network.
        """
        config = container_pb2.ContainerConfig(image="busybox")
        config.cmd.values.extend(["sleep", "1000"])
        made = await deferToThread(self.api.containers.CreateContainer, container_pb2.CreateContainerRequest(
            name=name, config=config, host_config=container_pb2.HostConfig(network_mode="none")), timeout=60)
        await self.daemon.engine.containers.start_container(made.id)
        return str(made.id)

    async def test_copy_path_with_nul(self) -> None:
        """
        A copy path with a NUL byte in it is INVALID_ARGUMENT (the copy
        helper used to fail on it: INTERNAL), for ``cp`` both ways and its
        stat, on a stopped and a running container.
        """
        containers = self.api.containers
        config = container_pb2.ContainerConfig(image="busybox")
        config.cmd.values.extend(["sleep", "1000"])
        made = await deferToThread(containers.CreateContainer, container_pb2.CreateContainerRequest(
            name="nul", config=config, host_config=container_pb2.HostConfig(network_mode="none")), timeout=60)

        def copy_to(path: str) -> Any:
            def frames() -> Iterator[Any]:
                yield container_pb2.CopyToRequest(options=container_pb2.CopyToOptions(
                    container_id=made.id, path=path))
                yield container_pb2.CopyToRequest(data=b"\0" * 1024)

            return containers.CopyTo(frames(), timeout=30)

        def copy_from(request: Any, timeout: float) -> list[Any]:
            return list(containers.CopyFrom(request, timeout=timeout))

        for running in (False, True):
            if running:
                await deferToThread(containers.StartContainer, container_pb2.StartContainerRequest(
                    container_id=made.id), timeout=60)
            for stat_only in (False, True):
                await self.refused(copy_from, container_pb2.CopyFromRequest(
                    container_id=made.id, path="/etc/\0passwd", stat_only=stat_only),
                    grpc.StatusCode.INVALID_ARGUMENT, "NUL byte")
            await self.refused(lambda path, timeout: copy_to(path), "/tmp\0", grpc.StatusCode.INVALID_ARGUMENT,
                               "NUL byte")

    async def test_top_arguments_with_nul(self) -> None:
        """
        ps arguments with a NUL byte are INVALID_ARGUMENT (spawning ps with
        them failed: INTERNAL).
        """
        containers = self.api.containers
        config = container_pb2.ContainerConfig(image="busybox")
        config.cmd.values.extend(["sleep", "1000"])
        made = await deferToThread(containers.CreateContainer, container_pb2.CreateContainerRequest(
            name="top", config=config, host_config=container_pb2.HostConfig(network_mode="none")), timeout=60)
        await deferToThread(containers.StartContainer, container_pb2.StartContainerRequest(container_id=made.id),
                            timeout=60)
        await self.refused(containers.Top, container_pb2.TopRequest(container_id=made.id, ps_args="-o pid\0"),
                           grpc.StatusCode.INVALID_ARGUMENT, "NUL byte")

    async def test_rm_force_as_it_exits(self) -> None:
        """
        ``rm -f`` of a container that exits as it is killed: the shim
        goes before it answers the kill, and the removal still completes
        (it failed UNAVAILABLE "the shim closed the connection": critest's
        image identifier test removing a container whose ``sh`` had just
        ended).
        """
        manager = self.daemon.engine.containers
        cid = await self.running("going")
        shim = manager.supervisor.shims[cid]
        kill = shim.kill

        async def killed_then_gone(*args: Any, **kwargs: Any) -> None:
            await kill(*args, **kwargs)
            raise ShimGone("the shim closed the connection")

        self.patch(shim, "kill", lambda *a, **kw: Deferred.fromCoroutine(killed_then_gone(*a, **kw)))
        await manager.remove(cid, force=True)
        self.assertNotIn(cid, manager.records)
        self.assertEqual(self.flushLoggedErrors(), [])

    async def test_pause_kill_as_it_exits(self) -> None:
        """
        pause, update, kill and unpause of a container whose shim goes before it answers
        (the container exited meanwhile): the user is told the container
        is not running (FAILED_PRECONDITION, docker's 409), not that the
        shim closed its connection (UNAVAILABLE, which clients retry).
        """
        manager = self.daemon.engine.containers
        cid = await self.running("pausing")
        shim = manager.supervisor.shims[cid]

        def gone(*args: Any, **kwargs: Any) -> Deferred[None]:
            return fail(ShimGone("the shim closed the connection"))

        patched = self.patch(shim, "pause", gone)
        await self.refused(self.api.containers.PauseContainer,
                           container_pb2.PauseContainerRequest(container_id=cid),
                           grpc.StatusCode.FAILED_PRECONDITION, "is not running")
        self.assertEqual(manager.records[cid].state.status, "running")
        patched.restore()
        # update: the limits are kept for its next start, as a stopped one's.
        patched = self.patch(shim, "update", gone)
        await manager.update(cid, resources=attrs.evolve(manager.records[cid].host.resources,
                                                             memory=64 * 2 ** 20))
        self.assertEqual(manager.records[cid].host.resources.memory, 64 * 2 ** 20)
        patched.restore()
        patched = self.patch(shim, "kill", gone)
        await self.refused(self.api.containers.KillContainer,
                           container_pb2.KillContainerRequest(container_id=cid),
                           grpc.StatusCode.FAILED_PRECONDITION, "is not running")
        patched.restore()
        await manager.pause_container(cid)
        self.patch(shim, "resume", gone)
        await self.refused(self.api.containers.UnpauseContainer,
                           container_pb2.UnpauseContainerRequest(container_id=cid),
                           grpc.StatusCode.FAILED_PRECONDITION, "is not running")
        self.assertEqual(self.flushLoggedErrors(), [])

    async def test_commit_resume_after_exit(self) -> None:
        """
        A container that exits (or is killed) while a commit holds it
        paused: the resume after the commit has nothing to resume, and
        says so in the log, without a traceback.
        """
        manager = self.daemon.engine.containers
        cid = await self.running("committed")
        await manager.pause_container(cid)
        self.patch(manager.supervisor, "shims", {})
        await manager._resume_after_commit(cid)
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertEqual(manager.records[cid].state.status, "paused")

    async def test_state_change_during_rename(self) -> None:
        """
        A state change (here, an exit recorded) that comes while a rename
        or a port's publication waits for its write: both are kept, in
        memory and in the store (the rename's write used to overwrite the
        state in memory, the state's write the name on disk: a later create
        of the old name then failed on the store's unique name).
        """
        manager = self.daemon.engine.containers
        config = container_pb2.ContainerConfig(image="busybox")
        config.cmd.values.extend(["true"])
        made = await deferToThread(self.api.containers.CreateContainer, container_pb2.CreateContainerRequest(
            name="before", config=config), timeout=60)
        renaming = manager.rename(made.id, "after")
        await manager._set_state(made.id, exit_code=3)
        await renaming
        publishing = manager.publish_port(made.id, PortBinding("80/tcp", "", "8080"))
        await manager._set_state(made.id, error="meanwhile")
        await publishing
        stored = {r.id: r for r in await manager._store._run(manager._store._load)}
        for record in (manager.records[made.id], stored[made.id]):
            self.assertEqual((record.name, record.state.exit_code, record.state.error), ("after", 3, "meanwhile"))
            self.assertEqual(record.host.port_bindings, (PortBinding("80/tcp", "", "8080"),))
        again = await deferToThread(self.api.containers.CreateContainer, container_pb2.CreateContainerRequest(
            name="before", config=config), timeout=60)
        self.assertIn(again.id, manager.records)

    async def test_auto_remove_after_rm(self) -> None:
        """
        A --rm container that exits while ``rm -f`` removes it: its own
        removal finds it gone, which is no error (it used to log one: the
        fuzzer's settle step removing RunInteractive's containers).
        """
        manager = self.daemon.engine.containers
        config = container_pb2.ContainerConfig(image="busybox")
        config.cmd.values.extend(["sleep", "1000"])
        made = await deferToThread(self.api.containers.CreateContainer, container_pb2.CreateContainerRequest(
            name="gone", config=config, host_config=container_pb2.HostConfig(network_mode="none", auto_remove=True)),
            timeout=60)
        await manager.start_container(made.id)
        died: Deferred[None] = Deferred()

        def seen(event: Any) -> None:
            if not died.called:
                died.callback(None)

        self.addCleanup(self.daemon.engine.events.subscribe(seen, EventFilter(actions=frozenset({"die"}))))
        # A removal holds the container's lock from before its exit to
        # after its auto-removal asked for it.
        lock = manager._lock(made.id)
        await lock.acquire()
        try:
            await manager.supervisor.shims[made.id].kill(signal.SIGKILL)
            await died
            await manager._remove(made.id, True, True)
        finally:
            lock.release()
        self.assertNotIn(made.id, manager.records)
        # The auto-removal has run by now (the lock went to it at once).
        self.assertEqual(self.flushLoggedErrors(), [])
