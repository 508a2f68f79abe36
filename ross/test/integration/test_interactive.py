"""
Interactive containers through a real PTY: ``ross run -it``, ``exec -it``,
``attach``, resize, Ctrl-C, detach keys, scrollback, pipe mode, and the
local terminal put back on every exit path; every test on both paths, the
direct channel (a local client's default) and the gRPC stream
(C{ROSS_DIRECT=0}, what remote clients use).
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

import grpc
from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread

from ross.testing.containers import ContainerTestCase
from ross.testing.daemon import REPO, run_cli
from ross.testing.terminal import Terminal
from ross.v1 import container_pb2


#: Tests whose sessions stay on the stream on either path: failures before
#: a session, and ``start -a`` (attached before the container runs).
ONLY_STREAMS = ("test_failed_exec", "test_bad_streams", "test_start_attach")


class InteractiveTests(ContainerTestCase):
    """
    On the direct channel.
    """

    timeout = 120
    #: C{ROSS_DIRECT} for the CLI.
    direct = "1"

    def setUp(self) -> Any:
        self.addCleanup(self.check_path)
        return super().setUp()

    def check_path(self) -> None:
        """
        The sessions went the way the test says (none may, for tests of
        plain commands).
        """
        handed = self.daemon.daemon.direct.handed
        if self.direct == "0":
            self.assertEqual(handed, 0)
        elif self._testMethodName not in ONLY_STREAMS:
            self.assertGreater(handed, 0)

    def terminal(self, *args: str, rows: int = 24, cols: int = 80) -> Terminal:
        env = dict(os.environ, ROSS_HOST=self.daemon.address, PYTHONPATH=str(REPO), TERM="xterm",
                   ROSS_DIRECT=self.direct)
        term = Terminal([sys.executable, "-m", "ross.cli.main", *args], env=env, rows=rows, cols=cols)
        self.addCleanup(term.close)
        return term

    def ross(self, *args: str, input: bytes | None = None) -> Any:
        return deferToThread(run_cli, self.daemon.address, *args, input=input, env={"ROSS_DIRECT": self.direct})

    @inlineCallbacks
    def test_shell_resize_ctrl_c_exit_code(self) -> Any:
        """
        A real shell: commands run, the window size follows the terminal,
        Ctrl-C interrupts the foreground command, the shell's exit code is
        ross's, and the terminal's mode is restored.
        """
        term = self.terminal("run", "-it", "--rm", "--name", "tty", "busybox", "sh", rows=30, cols=100)

        def scenario() -> int:
            term.expect(rb"/ # ")
            term.send(b"echo $((6*7)); stty size\r")
            term.expect(rb"42\r\n30 100\r\n")
            term.resize(50, 132)
            mark = len(term.output)
            term.send(b"stty size\r")
            term.expect(rb"50 132\r\n", start=mark)
            mark = len(term.output)
            term.send(b"sleep 100\r")
            term.expect(rb"sleep 100\r\n", start=mark)
            # Ctrl-C must reach sleep, not the shell's line editor: wait
            # until sleep runs.
            while b"sleep 100" not in run_cli(self.daemon.address, "exec", "tty", "ps", "-o", "args",
                                               env={"ROSS_DIRECT": self.direct}).stdout:
                pass
            term.send(b"\x03")
            term.expect(rb"\^C", start=mark)
            mark = len(term.output)
            term.send(b"echo alive\r")
            term.expect(rb"alive\r\n", start=mark)
            term.send(b"exit 9\r")
            return term.wait(timeout=30)

        code = yield deferToThread(scenario)
        self.assertEqual(code, 9)
        self.assertEqual(term.mode(), term.initial_mode)

    @inlineCallbacks
    def test_detach_and_reattach_with_scrollback(self) -> Any:
        """
        Ctrl-P Ctrl-Q detaches and leaves the container running; attach
        shows the recent screen first, then live output; a second client
        sees the same output.
        """
        term = self.terminal("run", "-it", "--name", "keeper", "busybox", "sh")

        def detach() -> int:
            term.expect(rb"/ # ")
            term.send(b"echo marker-$((1+1))\r")
            term.expect(rb"marker-2\r\n")
            term.send(b"\x10\x11")
            return term.wait(timeout=30)

        code = yield deferToThread(detach)
        self.assertEqual(code, 0)
        self.assertEqual(term.mode(), term.initial_mode)
        self.assertEqual(self.record("keeper").state.status, "running")

        first = self.terminal("attach", "keeper")
        second = self.terminal("attach", "keeper")

        def reattach() -> int:
            first.expect(rb"marker-2")
            second.expect(rb"marker-2")
            mark1, mark2 = len(first.output), len(second.output)
            first.send(b"echo from-first\r")
            second.expect(rb"from-first\r\n", start=mark2)
            first.expect(rb"from-first\r\n", start=mark1)
            second.kill(signal.SIGKILL)
            second.wait(timeout=30)
            mark1 = len(first.output)
            first.send(b"echo still-here\r")
            first.expect(rb"still-here\r\n", start=mark1)
            first.send(b"exit 3\r")
            return first.wait(timeout=30)

        code = yield deferToThread(reattach)
        self.assertEqual(code, 3)
        yield self.wait_for(lambda: self.record("keeper").state.status == "exited")
        self.assertEqual(self.record("keeper").state.exit_code, 3)

    @inlineCallbacks
    def test_exec_tty_and_killed_client(self) -> Any:
        """
        exec -it gives a shell in the running container; a client killed
        with SIGKILL mid-session leaves the container and the daemon
        healthy: another exec works.
        """
        result = yield self.ross("run", "-d", "--name", "host", "busybox", "sleep", "1000")
        self.assertEqual(result.returncode, 0, result.stderr)
        term = self.terminal("exec", "-it", "host", "sh")

        def scenario() -> None:
            term.expect(rb"# ")
            term.send(b"echo in-exec $$\r")
            term.expect(rb"in-exec \d+\r\n")
            term.kill(signal.SIGKILL)
            term.wait(timeout=30)

        yield deferToThread(scenario)
        result = yield self.ross("exec", "host", "echo", "ok")
        self.assertEqual((result.returncode, result.stdout), (0, b"ok\n"))
        self.assertEqual(self.record("host").state.status, "running")

    @inlineCallbacks
    def test_exec_session_reattached_by_id(self) -> Any:
        """
        A detached exec session keeps running and can be attached by its ID,
        its screen replayed.
        """
        result = yield self.ross("run", "-d", "--name", "box", "busybox", "sleep", "1000")
        term = self.terminal("exec", "-it", "box", "sh")

        def leave() -> None:
            term.expect(rb"# ")
            term.send(b"export SEEN=yes; echo ready\r")
            term.expect(rb"ready\r\n")
            term.send(b"\x10\x11")
            term.wait(timeout=30)

        yield deferToThread(leave)
        result = yield self.ross("inspect", "-f", "{{json .ExecIDs}}", "box")
        exec_ids = __import__("json").loads(result.stdout)
        self.assertEqual(len(exec_ids), 1)
        again = self.terminal("attach", "--exec", exec_ids[0], "box")

        def resume() -> int:
            again.expect(rb"ready")
            mark = len(again.output)
            again.send(b"echo $SEEN\r")
            again.expect(rb"yes\r\n", start=mark)
            again.send(b"exit 4\r")
            return again.wait(timeout=30)

        self.assertEqual((yield deferToThread(resume)), 4)
        info = yield deferToThread(self.api.containers.InspectExec,
                                   container_pb2.InspectExecRequest(exec_id=exec_ids[0]))
        self.assertEqual((info.running, info.exit_code), (False, 4))

    @inlineCallbacks
    def test_full_screen_programs(self) -> Any:
        """
        vi edits a file and top draws its screen through the stream: cursor
        addressing and alternate screens pass unchanged both ways.
        """
        term = self.terminal("run", "-it", "--rm", "busybox", "sh", rows=30, cols=100)

        def scenario() -> int:
            term.expect(rb"/ # ")
            term.send(b"vi /tmp/note\r")
            term.expect(rb"\x1b\[")
            term.expect(rb"/tmp/note")
            term.send(b"ifirst line\rsecond line")
            term.expect(rb"I /tmp/note \[Modified\] 2/2")
            # ESC alone: vi reads ESC and what follows at once as one key.
            mark = term.length
            term.send(b"\x1b")
            term.expect(rb"- /tmp/note \[Modified\]", start=mark)
            term.send(b":wq\r")
            term.expect(rb"/ # ", start=mark)
            mark = term.length
            term.send(b"cat /tmp/note\r")
            term.expect(rb"first line\r\nsecond line\r\n", start=mark)
            mark = term.length
            term.send(b"top\r")
            term.expect(rb"Mem: .*used", start=mark)
            term.expect(rb"PID +PPID +USER", start=mark)
            term.send(b"q")
            mark = term.length
            term.send(b"echo top-done\r")
            term.expect(rb"top-done\r\n", start=mark)
            term.send(b"exit\r")
            return term.wait(timeout=30)

        self.assertEqual((yield deferToThread(scenario)), 0)

    @inlineCallbacks
    def test_failed_exec(self) -> Any:
        """
        An exec of a missing command exits 127, attached or detached, with
        docker's message, and leaves no session behind.
        """
        result = yield self.ross("run", "-d", "--name", "execs", "busybox", "sleep", "1000")
        for args in (["exec"], ["exec", "-d"]):
            result = yield self.ross(*args, "execs", "nosuch")
            self.assertEqual(result.returncode, 127, args)
            self.assertIn(b'exec: "nosuch": executable file not found in $PATH', result.stderr)
        self.assertEqual(self.daemon.engine.containers.execs, {})

    @inlineCallbacks
    def test_pipe_mode(self) -> Any:
        """
        Without a TTY: stdin is closed on EOF, stdout and stderr stay apart,
        and every byte value passes unchanged.
        """
        result = yield self.ross("run", "--rm", "-i", "busybox", "cat", input=b"hi\n")
        self.assertEqual((result.returncode, result.stdout), (0, b"hi\n"))
        data = bytes(range(256)) * 4096 + os.urandom(300_000)
        result = yield self.ross("run", "--rm", "-i", "busybox", "cat", input=data)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout, data)
        result = yield self.ross("run", "--rm", "-i", "busybox", "sh", "-c", "cat >&2; echo done", input=b"to-err")
        self.assertEqual((result.stdout, result.stderr), (b"done\n", b"to-err"))

    @inlineCallbacks
    def test_start_attach(self) -> Any:
        """
        ``start -ai`` on a created container attaches before it runs.
        """
        result = yield self.ross("create", "-i", "--name", "later", "busybox", "sh", "-c", "read x; echo got $x")
        self.assertEqual(result.returncode, 0, result.stderr)
        result = yield self.ross("start", "-ai", "later", input=b"value\n")
        self.assertEqual((result.returncode, result.stdout), (0, b"got value\n"))

    @inlineCallbacks
    def test_bad_streams(self) -> Any:
        """
        A stream that does not start with its start frame is refused.
        """
        call = self.api.containers.Exec(iter([container_pb2.ExecInput(stdin=b"x")]))
        e = yield self.assertFailure(deferToThread(list, call), grpc.RpcError)
        self.assertEqual(e.code(), grpc.StatusCode.INVALID_ARGUMENT)
        call = self.api.containers.Exec(iter([container_pb2.ExecInput(
            start=container_pb2.ExecConfig(container_id="nosuch", cmd=["true"]))]))
        e = yield self.assertFailure(deferToThread(list, call), grpc.RpcError)
        self.assertEqual(e.code(), grpc.StatusCode.NOT_FOUND)


class GrpcPathInteractiveTests(InteractiveTests):
    """
    The same on the gRPC stream.
    """

    direct = "0"
