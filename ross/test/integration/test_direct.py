"""
Direct channels (SPEC 3): a ticket works once, for its session, within
seconds; the channel reaches its session's input, output and size and
nothing of the shim's control; a client that vanishes frees it; and a
session on one outlives the daemon, SIGTERMed or SIGKILLed.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import sys
import time
from typing import Any

import grpc
from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from ross.client.direct import DirectError, redeem
from ross.protocols import shimwire
from ross.services import direct as direct_service
from ross.testing.containers import ContainerTestCase, sleep
from ross.testing.daemon import REPO, DaemonProcess
from ross.testing.images import docker_archive
from ross.testing.terminal import Terminal
from ross.v1 import container_pb2
from ross.v1 import image_pb2


def _read_until(channel: socket.socket, pattern: bytes, timeout: float = 15.0) -> bytes:
    """
    The output of a (blocking) channel until C{pattern} shows in it.
    """
    channel.settimeout(timeout)
    decoder = shimwire.FrameDecoder()
    seen = b""
    deadline = time.monotonic() + timeout
    while not re.search(pattern, seen):
        if time.monotonic() > deadline:
            raise AssertionError(f"no {pattern!r} in {seen[-500:]!r}")
        data = channel.recv(65536)
        if not data:
            raise AssertionError(f"the channel closed; output was {seen[-500:]!r}")
        seen += b"".join(p for kind, p in decoder.feed(data) if kind in (shimwire.STDOUT, shimwire.STDERR))
    return seen


class TicketTests(ContainerTestCase):
    @inlineCallbacks
    def setUp(self) -> Any:  # type: ignore[override]
        yield super().setUp()
        result = yield self.ross("run", "-d", "-t", "-i", "--name", "target", "busybox", "sh")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.channels = self.daemon.daemon.direct

    def attach(self) -> Any:
        """
        Attach with a direct channel asked for; fires with the started frame.
        """
        def call() -> Any:
            frames = self.api.containers.Attach(iter([container_pb2.AttachInput(start=container_pb2.AttachStart(
                container_id="target", attach_stdin=True, direct=True))]))
            return [f for f in frames]

        return deferToThread(call).addCallback(lambda frames: frames[0].started)

    @inlineCallbacks
    def test_ticket_once(self) -> Any:
        """
        A ticket gives its channel once: the shell answers on it; the same
        ticket again, a forged one, and garbage are refused, and the
        daemon logs each refusal.
        """
        started = yield self.attach()
        self.assertTrue(started.direct_ticket)
        self.assertEqual(started.direct_socket, self.channels.path)
        channel = yield deferToThread(redeem, started.direct_socket, started.direct_ticket)
        self.addCleanup(channel.close)
        channel.setblocking(True)
        channel.sendall(shimwire.frame(shimwire.STDIN, b"echo $((6*7))\r"))
        output = yield deferToThread(_read_until, channel, rb"42")
        self.assertIn(b"42", output)

        forged = started.direct_ticket[:-4] + ("0000" if not started.direct_ticket.endswith("0000") else "1111")
        for ticket in (started.direct_ticket, forged, "x" * 64, ""):
            e = yield self.assertFailure(deferToThread(redeem, started.direct_socket, ticket), DirectError)
            self.assertIn("ticket", str(e))
        self.assertEqual(self.channels.handed, 1)

    @inlineCallbacks
    def test_ticket_expires(self) -> Any:
        """
        A ticket not redeemed in time is refused, and its channel closed
        (the shim's session lets go of it).
        """
        self.patch(direct_service, "TICKET_TTL", 0.2)
        started = yield self.attach()
        yield sleep(0.5)
        yield self.assertFailure(deferToThread(redeem, started.direct_socket, started.direct_ticket), DirectError)
        self.assertEqual(self.channels._tickets, {})

    @inlineCallbacks
    def test_slow_or_oversized_redeemer(self) -> Any:
        """
        A client of the direct socket that sends no ticket in time, or a
        line too long to be one, is let go.
        """
        self.patch(direct_service, "REDEEM_TIMEOUT", 0.2)

        def talk(payload: bytes) -> bytes:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(10)
                sock.connect(self.channels.path)
                sock.sendall(payload)
                return sock.recv(512)

        answer = yield deferToThread(talk, b"")
        self.assertTrue(answer.startswith(b"e"), answer)
        answer = yield deferToThread(talk, b"a" * 200)
        self.assertTrue(answer.startswith(b"e"), answer)

    @inlineCallbacks
    def test_channel_is_no_control_connection(self) -> Any:
        """
        A control message on a direct channel (here a kill of every
        process) is not obeyed: the shim drops the channel and the
        container runs on.
        """
        started = yield self.attach()
        channel = yield deferToThread(redeem, started.direct_socket, started.direct_ticket)
        self.addCleanup(channel.close)
        channel.setblocking(True)
        channel.settimeout(15)
        channel.sendall(shimwire.message({"id": 7, "op": "kill", "signal": 9, "all": True}))

        def rest() -> bytes:
            data = b""
            while True:
                chunk = channel.recv(65536)
                if not chunk:
                    return data
                data += chunk

        rest_of_it = yield deferToThread(rest)
        self.assertNotIn(b"ok", rest_of_it)
        yield sleep(0.3)
        self.assertTrue(self.record("target").state.running)

    @inlineCallbacks
    def test_not_asked_no_channel(self) -> Any:
        """
        A session that did not ask for a channel gets none: its output comes
        on its stream (for a remote client, see L{RemoteClientTests}).
        """
        def call() -> Any:
            frames = self.api.containers.Exec(iter([container_pb2.ExecInput(start=container_pb2.ExecConfig(
                container_id="target", cmd=["echo", "streamed"]))]))
            return list(frames)

        frames = yield deferToThread(call)
        self.assertEqual(frames[0].started.direct_ticket, "")
        self.assertIn(b"streamed", b"".join(f.data.data for f in frames if f.WhichOneof("output") == "data"))

    @inlineCallbacks
    def test_vanished_client_frees_its_channel(self) -> Any:
        """
        A client killed while it holds a channel (attached to the main
        process) frees it: the shim holds no more connections than before.
        """
        shim_pid = self.daemon.engine.containers.supervisor.shims[self.record("target").id].shim_pid

        def fds() -> int:
            return len(os.listdir(f"/proc/{shim_pid}/fd"))

        before = fds()
        env = dict(os.environ, ROSS_HOST=self.daemon.address, PYTHONPATH=str(REPO), TERM="xterm")
        term = Terminal([sys.executable, "-m", "ross.cli.main", "attach", "target"], env=env)
        self.addCleanup(term.close)
        term.send(b"echo $((6*7))\r")
        yield deferToThread(term.expect, rb"42")
        self.assertGreater(fds(), before)
        term.kill(signal.SIGKILL)
        yield deferToThread(term.wait)
        yield self.wait_for(lambda: fds() <= before)


class ExitRecordedTests(ContainerTestCase):
    """
    On a direct channel the container's exit reaches the client from its
    shim, maybe before the daemon recorded it; run and start -a still
    return only once the daemon has it, as on the stream (docker's run
    returns after the die event): a script's next command (rm, commit,
    inspect) must see the container exited.
    """

    @inlineCallbacks
    def setUp(self) -> Any:  # type: ignore[override]
        yield super().setUp()
        supervisor = self.daemon.engine.containers.supervisor
        recorded = supervisor._exited

        async def late(cid: str, status: Any) -> None:
            # The daemon slow to take the exit in (a loaded machine).
            await sleep(1.0)
            await recorded(cid, status)

        self.patch(supervisor, "_exited", late)

    @inlineCallbacks
    def check_recorded(self, name: str) -> Any:
        record = self.record(name)
        self.assertEqual((record.state.status, record.state.exit_code), ("exited", 3))
        result = yield self.ross("rm", name)
        self.assertEqual(result.returncode, 0, result.stderr)

    @inlineCallbacks
    def test_run(self) -> Any:
        result = yield self.ross("run", "--name", "late1", "busybox", "sh", "-c", "exit 3")
        self.assertEqual(result.returncode, 3, result.stderr)
        yield self.check_recorded("late1")

    @inlineCallbacks
    def test_start_attached(self) -> Any:
        result = yield self.ross("create", "--name", "late2", "busybox", "sh", "-c", "exit 3")
        self.assertEqual(result.returncode, 0, result.stderr)
        result = yield self.ross("start", "-a", "late2")
        self.assertEqual(result.returncode, 3, result.stderr)
        yield self.check_recorded("late2")

    @inlineCallbacks
    def test_run_rm(self) -> Any:
        """With --rm: gone when run returns."""
        result = yield self.ross("run", "--rm", "--name", "late3", "busybox", "sh", "-c", "exit 3")
        self.assertEqual(result.returncode, 3, result.stderr)
        self.assertNotIn("late3", [r.name for r in self.daemon.engine.containers.records.values()])


class SurvivalTests(TestCase):
    """
    Sessions on direct channels with the daemon going away under them.
    """

    timeout = 180

    def setUp(self) -> None:
        self.daemon = DaemonProcess()
        self.addCleanup(self.daemon.cleanup)

    def terminal(self, *args: str) -> Terminal:
        env = dict(os.environ, ROSS_HOST=self.daemon.address, PYTHONPATH=str(REPO), TERM="xterm")
        term = Terminal([sys.executable, "-m", "ross.cli.main", *args], env=env, rows=24, cols=80)
        self.addCleanup(term.close)
        return term

    def scenario(self, stop: str) -> None:
        """
        Blocking: ``run -it`` and ``exec -it`` shells typed into across a
        daemon stopped (C{stop}: "kill" or "term") and started again;
        output keeps coming, resize works, and the exit codes arrive.
        """
        daemon = self.daemon
        daemon.start()
        archive = docker_archive(daemon.base / "busybox.tar")
        self.assertEqual(daemon.ross("load", "-i", str(archive.path)).returncode, 0)
        run = self.terminal("run", "-it", "--name", "kept", "busybox", "sh")
        run.expect(rb"/ # ")
        execed = self.terminal("exec", "-it", "kept", "sh")
        execed.expect(rb"/ # ")

        if stop == "kill":
            daemon.kill()
        else:
            self.assertIn(daemon.stop(), (0, -signal.SIGTERM))
        for term, word in ((run, b"run"), (execed, b"exec")):
            mark = term.length
            term.send(b"echo " + word + b"-$((40+2))\r")
            term.expect(word + rb"-42\r\n", start=mark)
            mark = term.length
            term.resize(33, 101)
            term.send(b"stty size\r")
            term.expect(rb"33 101\r\n", start=mark)
        # A burst of numbered lines while the daemon is away: all of them,
        # once each, in order.
        mark = run.length
        run.send(b"seq 1 3000; echo seq-$((3+4))\r")
        run.expect(rb"seq-7\r\n", start=mark)
        numbers = [int(n) for n in re.findall(rb"^(\d+)\r$", run.output[mark:], re.M)]
        self.assertEqual(numbers, list(range(1, 3001)))

        daemon.start()
        mark = execed.length
        execed.send(b"echo back\r")
        execed.expect(rb"back\r\n", start=mark)
        execed.send(b"exit 5\r")
        self.assertEqual(execed.wait(timeout=30), 5)
        run.send(b"exit 7\r")
        self.assertEqual(run.wait(timeout=30), 7)
        inspect = daemon.ross("inspect", "-f", "{{.State.ExitCode}}", "kept")
        self.assertEqual(inspect.stdout.strip(), b"7")

    def test_daemon_killed(self) -> Any:
        return deferToThread(self.scenario, "kill")

    def test_daemon_stopped(self) -> Any:
        return deferToThread(self.scenario, "term")


class RemoteClientTests(ContainerTestCase):
    """
    A client on TCP, which the daemon cannot tell from one on another host,
    never gets a direct channel: the RPCs that exist only for one refuse it
    with FAILED_PRECONDITION, the others keep their bytes on the stream,
    and no ticket is issued. The same calls on the unix socket get one.
    """

    def daemon_options(self) -> dict[str, Any]:
        return {"also_listen": ["tcp://127.0.0.1:0"]}

    @inlineCallbacks
    def setUp(self) -> Any:  # type: ignore[override]
        yield super().setUp()
        result = yield self.ross("run", "-d", "--name", "target", "busybox", "sleep", "1000")
        self.assertEqual(result.returncode, 0, result.stderr)
        api = self.daemon.daemon.api
        tcp = api.address_of(api.listeners[1])
        self.assertTrue(tcp.startswith("tcp://127.0.0.1:"), tcp)
        self.remote = self.daemon.clients(tcp)
        self.channels = self.daemon.daemon.direct

    def direct_only_calls(self, clients: Any) -> list[tuple[str, Any]]:
        """
        (name, C{fn}) of each RPC that exists only for a direct channel:
        C{fn()} starts the call (bounded: its deadline ends every wait on
        its stream).
        """
        copy_to = container_pb2.CopyToOptions(container_id="target", path="/tmp")
        return [
            ("CopyToDirect", lambda: clients.containers.CopyToDirect(copy_to, timeout=30)),
            ("LoadImagesDirect", lambda: clients.images.LoadImagesDirect(image_pb2.LoadOptions(), timeout=30)),
            ("ImportImageDirect", lambda: clients.images.ImportImageDirect(image_pb2.ImportOptions(), timeout=30)),
        ]

    @inlineCallbacks
    def test_direct_only_calls_refused(self) -> Any:
        for name, start in self.direct_only_calls(self.remote):
            error = yield self.assertFailure(deferToThread(lambda: list(start())), grpc.RpcError)
            self.assertEqual(error.code(), grpc.StatusCode.FAILED_PRECONDITION, name)
            self.assertIn("unix socket", error.details(), name)
        self.assertEqual(self.channels._tickets, {})
        self.assertEqual(self.channels.handed, 0)
        images = yield deferToThread(self.api.images.ListImages, image_pb2.ListImagesRequest(), timeout=30)
        self.assertEqual(len(images.images), 1)

    @inlineCallbacks
    def test_same_calls_local(self) -> Any:
        """
        The control: on the unix socket, each of those calls first sends its
        ticket (then it is cancelled, the ticket unredeemed).
        """
        for name, start in self.direct_only_calls(self.api):
            def first() -> Any:
                stream = start()
                try:
                    return next(stream)
                finally:
                    stream.cancel()

            response = yield deferToThread(first)
            self.assertTrue(response.ticket.ticket, name)

    @inlineCallbacks
    def test_streams_instead(self) -> Any:
        """
        An exec and a CopyFrom that ask for a channel from TCP get their
        bytes on the stream.
        """
        def exec_call() -> Any:
            return list(self.remote.containers.Exec(iter([container_pb2.ExecInput(start=container_pb2.ExecConfig(
                container_id="target", cmd=["echo", "streamed"], direct=True))]), timeout=30))

        frames = yield deferToThread(exec_call)
        self.assertEqual(frames[0].started.direct_ticket, "")
        self.assertIn(b"streamed", b"".join(f.data.data for f in frames if f.WhichOneof("output") == "data"))

        def copy_call() -> Any:
            return list(self.remote.containers.CopyFrom(container_pb2.CopyFromRequest(
                container_id="target", path="/etc/passwd", direct=True), timeout=30))

        responses = yield deferToThread(copy_call)
        kinds = [r.WhichOneof("response") for r in responses]
        self.assertEqual(kinds[0], "stat")
        self.assertNotIn("ticket", kinds)
        self.assertIn(b"root:", b"".join(r.data for r in responses))
        self.assertEqual(self.channels._tickets, {})
