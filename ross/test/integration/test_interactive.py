"""
Interactive containers through a real PTY: ``ross run -it``, ``exec -it``,
``attach``, resize, Ctrl-C, detach keys, scrollback, pipe mode, and the
local terminal put back on every exit path; every test on both paths, the
direct channel (a local client's default) and the gRPC stream
(C{ROSS_DIRECT=0}, what remote clients use). Sessions on the gRPC stream
across a daemon killed or stopped and started again are here too (the
direct channel's are in test_direct).
"""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from typing import Any

import grpc
from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from ross.testing.containers import ContainerTestCase
from ross.testing.daemon import REPO, DaemonProcess, run_cli
from ross.testing.images import docker_archive
from ross.testing.terminal import Terminal
from ross.v1 import common_pb2, container_pb2


#: Tests whose sessions stay on the stream on either path: failures before
#: a session, and ``start -a`` (attached before the container runs).
ONLY_STREAMS = ("test_failed_exec", "test_bad_streams", "test_start_attach")


def _read_until(stream: Any, wanted: bytes, timeout: float) -> bytes:
    """
    What C{stream} (a pipe) gave until C{wanted} came, failing after
    C{timeout} seconds or at its end.
    """
    deadline = time.monotonic() + timeout
    seen = b""
    while wanted not in seen:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {wanted!r} within {timeout}s: {seen!r}")
        if select.select([stream], [], [], left)[0]:
            chunk = os.read(stream.fileno(), 4096)
            if not chunk:
                raise AssertionError(f"the stream ended before {wanted!r}: {seen!r}")
            seen += chunk
    return seen


def _ended(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
    process.wait(10)
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()


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
        docker's message, and leaves no session behind; one whose user or
        working directory is not there exits 126, as docker's.
        """
        result = yield self.ross("run", "-d", "--name", "execs", "busybox", "sleep", "1000")
        for args in (["exec"], ["exec", "-d"]):
            result = yield self.ross(*args, "execs", "nosuch")
            self.assertEqual(result.returncode, 127, args)
            self.assertIn(b'exec: "nosuch": executable file not found in $PATH', result.stderr)
        for args, message in ((["-u", "nosuch"], b"unable to find user nosuch"),
                              (["-w", "/nonexist"], b"chdir to cwd ('/nonexist')")):
            result = yield self.ross("exec", *args, "execs", "true")
            self.assertEqual(result.returncode, 126, args)
            self.assertIn(message, result.stderr)
        self.assertEqual(self.daemon.engine.containers.sessions.execs, {})

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
        # -it wants a terminal on stdin, as docker's.
        result = yield self.ross("run", "--rm", "-it", "busybox", "true", input=b"")
        self.assertEqual((result.returncode, result.stderr), (1, b"Error: the input device is not a TTY\n"))

    @inlineCallbacks
    def test_signals_proxied(self) -> Any:
        """
        Without a TTY, the signals the CLI gets go to the container
        (docker's --sig-proxy, on by default): a trapped SIGUSR1 is seen,
        a SIGTERM ends the container with its own code, which the CLI
        returns. With --sig-proxy=false a SIGTERM ends only the CLI.
        """
        script = ('trap "echo got USR1" USR1; trap "echo got TERM; exit 9" TERM; echo ready; '
                  "while :; do sleep 0.1; done")
        env = dict(os.environ, ROSS_HOST=self.daemon.address, PYTHONPATH=str(REPO), ROSS_DIRECT=self.direct)
        client = subprocess.Popen([sys.executable, "-m", "ross.cli.main", "run", "-i", "--name", "proxied",
                                   "busybox", "sh", "-c", script], env=env, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.addCleanup(_ended, client)
        assert client.stdout is not None
        yield deferToThread(_read_until, client.stdout, b"ready\n", 30)
        client.send_signal(signal.SIGUSR1)
        yield deferToThread(_read_until, client.stdout, b"got USR1\n", 10)
        client.send_signal(signal.SIGTERM)
        yield deferToThread(_read_until, client.stdout, b"got TERM\n", 10)
        code = yield deferToThread(client.wait, 30)
        self.assertEqual(code, 9)
        self.assertEqual((self.record("proxied").state.status, self.record("proxied").state.exit_code),
                         ("exited", 9))
        client = subprocess.Popen([sys.executable, "-m", "ross.cli.main", "run", "-i", "--sig-proxy=false",
                                   "--name", "unproxied", "busybox", "sh", "-c", script], env=env,
                                  stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.addCleanup(_ended, client)
        assert client.stdout is not None
        yield deferToThread(_read_until, client.stdout, b"ready\n", 30)
        client.send_signal(signal.SIGTERM)
        code = yield deferToThread(client.wait, 30)
        self.assertEqual(code, -signal.SIGTERM)
        self.assertEqual(self.record("unproxied").state.status, "running")

    @inlineCallbacks
    def test_exec_pipes_resize_and_bad_frames(self) -> Any:
        """
        ``exec -i``: every byte value through, stdout and stderr apart,
        stdin's end passed on; ``exec -it``: a resize reaches the terminal.
        On a session the daemon relays (a gRPC client's), a second start
        frame and an impossible size end the call INVALID_ARGUMENT and
        leave the container running.
        """
        result = yield self.ross("run", "-d", "--name", "piped", "busybox", "sleep", "1000")
        self.assertEqual(result.returncode, 0, result.stderr)
        data = bytes(range(256)) * 4096 + os.urandom(300_000)
        result = yield self.ross("exec", "-i", "piped", "cat", input=data)
        self.assertEqual((result.returncode, result.stdout == data), (0, True), result.stderr)
        result = yield self.ross("exec", "-i", "piped", "sh", "-c", "cat >&2; echo done; exit 9", input=b"to-err")
        self.assertEqual((result.returncode, result.stdout, result.stderr), (9, b"done\n", b"to-err"))
        term = self.terminal("exec", "-it", "piped", "sh")

        def resized() -> int:
            term.expect(rb"# ")
            mark = term.length
            term.resize(33, 101)
            term.send(b"stty size\r")
            term.expect(rb"33 101\r\n", start=mark)
            term.send(b"exit 2\r")
            return term.wait(timeout=30)

        self.assertEqual((yield deferToThread(resized)), 2)
        start = container_pb2.ExecInput(start=container_pb2.ExecConfig(
            container_id="piped", cmd=["cat"], tty=True, attach_stdin=True))
        for second, message in [
                (start, "a second 'start' frame in one stream"),
                (container_pb2.ExecInput(resize=common_pb2.WindowSize(rows=70000, cols=80)), "")]:
            call = self.api.containers.Exec(iter([start, second]), timeout=30)
            e = yield self.assertFailure(deferToThread(list, call), grpc.RpcError)
            self.assertEqual(e.code(), grpc.StatusCode.INVALID_ARGUMENT)
            self.assertIn(message, e.details())
        self.assertEqual(self.record("piped").state.status, "running")

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


class GrpcSurvivalTests(TestCase):
    """
    Sessions on the gRPC stream (C{ROSS_DIRECT=0}) with the daemon going
    away under them: the client attaches again by itself once it is back.
    """

    timeout = 180

    def setUp(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.tcp = f"tcp://127.0.0.1:{s.getsockname()[1]}"
        self.daemon = DaemonProcess(extra=["--listen", self.tcp])
        self.addCleanup(self.daemon.cleanup)

    def terminal(self, *args: str, host: str = "") -> Terminal:
        env = dict(os.environ, ROSS_HOST=host or self.daemon.address, PYTHONPATH=str(REPO), TERM="xterm",
                   ROSS_DIRECT="0")
        term = Terminal([sys.executable, "-m", "ross.cli.main", *args], env=env, rows=24, cols=80)
        self.addCleanup(term.close)
        return term

    def ross(self, *args: str) -> Any:
        return self.daemon.ross(*args, env={"ROSS_DIRECT": "0"})

    def start(self) -> None:
        self.daemon.start()
        archive = docker_archive(self.daemon.base / "busybox.tar")
        self.assertEqual(self.ross("load", "-i", str(archive.path)).returncode, 0)

    def recorded(self, *names: str) -> None:
        """
        Wait until the daemon has recorded the start of the containers
        C{names}: one killed before that stops them as it comes back (a
        start it cannot know finished), which is not what these tests are
        about.
        """
        deadline = time.monotonic() + 15
        while True:
            result = self.ross("inspect", "-f", "{{.State.Running}}", *names)
            if result.returncode == 0 and result.stdout.split() == [b"true"] * len(names):
                return
            if time.monotonic() > deadline:
                self.fail(f"the starts of {names} were not recorded: {result.stdout!r} {result.stderr!r}")
            time.sleep(0.05)

    def away(self, stop: str) -> None:
        """
        Take the daemon away: SIGKILL (C{stop} "kill") or SIGTERM ("term").
        """
        if stop == "kill":
            self.daemon.kill()
        else:
            self.assertIn(self.daemon.stop(), (0, -signal.SIGTERM))

    def scenario(self, stop: str) -> None:
        """
        Blocking: ``run -it --rm`` and ``exec -it`` shells, and ``attach``
        to the first, across a daemon stopped and started again. A counting loop prints through the gap:
        every number once, in order; what is typed during the gap runs once
        the session is attached again; resize works; the exit codes arrive,
        and the --rm container goes away.
        """
        self.start()
        run = self.terminal("run", "-it", "--rm", "--name", "kept", "busybox", "sh")
        run.expect(rb"/ # ")
        self.recorded("kept")
        execed = self.terminal("exec", "-it", "kept", "sh")
        execed.expect(rb"/ # ")
        run.send(b"echo ready-$((1+1))\r")
        attached = self.terminal("attach", "kept")
        attached.expect(rb"ready-2\r\n")
        mark, attached_mark = run.length, attached.length
        run.send(b"i=0; while [ $i -lt 300 ]; do i=$((i+1)); echo n$i; usleep 10000; done; "
                 b"seq 1 3000; echo loop-$((3+4))\r")
        run.expect(rb"n5\r\n", start=mark)

        self.away(stop)
        # Typed while nothing reads it: it waits in the terminal; and the
        # window's size then is the one the session gets back.
        exec_mark = execed.length
        execed.send(b"echo exec-$((40+2)); stty size\r")
        execed.resize(30, 90)
        time.sleep(1)
        self.daemon.start()

        for term, start in ((run, mark), (attached, attached_mark)):
            term.expect(rb"loop-7\r\n", start=start, timeout=60)
            out = term.output[start:]
            numbers = [int(n) for n in re.findall(rb"^n(\d+)\r$", out, re.M)]
            self.assertEqual(numbers, list(range(1, 301)))
            counted = [int(n) for n in re.findall(rb"^(\d+)\r$", out, re.M)]
            self.assertEqual(counted, list(range(1, 3001)))
        execed.expect(rb"exec-42\r\n30 90\r\n", start=exec_mark)
        for term, word in ((run, b"run"), (execed, b"exec")):
            mark = term.length
            term.send(b"echo " + word + b"-back\r")
            term.expect(word + rb"-back\r\n", start=mark)
            mark = term.length
            term.resize(33, 101)
            term.send(b"stty size\r")
            term.expect(rb"33 101\r\n", start=mark)
            self.assertNotIn(b"Error", term.output)
        execed.send(b"exit 5\r")
        self.assertEqual(execed.wait(timeout=30), 5)
        run.send(b"exit 7\r")
        self.assertEqual(run.wait(timeout=30), 7)
        self.assertEqual(attached.wait(timeout=30), 7)
        self.assertEqual(run.mode(), run.initial_mode)
        listed = self.ross("ps", "-a", "--format", "{{.Names}}")
        self.assertNotIn(b"kept", listed.stdout)

    def test_daemon_killed(self) -> Any:
        return deferToThread(self.scenario, "kill")

    def test_daemon_stopped(self) -> Any:
        return deferToThread(self.scenario, "term")

    def ended_while_away(self) -> None:
        """
        Blocking: sessions whose processes exit while the daemon is down
        get their exit codes once it is back, a --rm container's too
        (removed as the daemon started again), to its attached client too.
        """
        self.start()
        result = self.ross("run", "-d", "--name", "host", "busybox", "sleep", "1000")
        self.assertEqual(result.returncode, 0, result.stderr)
        began = time.monotonic()
        execed = self.terminal("exec", "-it", "host", "sh", "-c", "echo exec-up; sleep 4; echo exec-bye; exit 6")
        execed.expect(rb"exec-up")
        run = self.terminal("run", "-it", "--name", "short", "busybox", "sh", "-c", "echo run-up; sleep 4; exit 3")
        run.expect(rb"run-up")
        removed = self.terminal("run", "-it", "--rm", "--name", "gone", "busybox", "sh", "-c",
                                "echo rm-up; sleep 4; exit 4")
        removed.expect(rb"rm-up")
        watching = self.terminal("attach", "gone")
        watching.expect(rb"rm-up")
        self.recorded("short", "gone")
        self.daemon.kill()
        self.assertLess(time.monotonic() - began, 4, "the sessions were not all running when the daemon went")
        time.sleep(5)
        self.daemon.start()
        self.assertEqual(execed.wait(timeout=30), 6)
        # Printed while the daemon was down, shown once it was back.
        self.assertEqual(execed.output.count(b"exec-bye"), 1)
        self.assertEqual(run.wait(timeout=30), 3)
        self.assertEqual(self.ross("inspect", "-f", "{{.State.ExitCode}}", "short").stdout.strip(), b"3")
        self.assertEqual(removed.wait(timeout=30), 4)
        self.assertEqual(watching.wait(timeout=30), 4)
        self.assertNotIn(b"gone", self.ross("ps", "-a", "--format", "{{.Names}}").stdout)

    def test_ended_while_away(self) -> Any:
        return deferToThread(self.ended_while_away)

    def away_long_over_tcp(self) -> None:
        """
        Blocking: a client over TCP (grpcio) finds a daemon back after ten
        seconds away and goes on (the channel's reconnection back-off is
        capped, test_reattach.ChannelTests: grpcio's own would grow past the
        minute a session waits after a longer absence).
        """
        self.start()
        run = self.terminal("run", "-it", "--rm", "--name", "far", "busybox", "sh", host=self.tcp)
        run.expect(rb"/ # ")
        self.recorded("far")
        self.daemon.kill()
        time.sleep(10)
        self.daemon.start()
        mark = run.length
        run.send(b"echo back-$((40+2))\r")
        run.expect(rb"back-42\r\n", start=mark, timeout=30)
        run.send(b"exit 7\r")
        self.assertEqual(run.wait(timeout=30), 7)

    def test_away_long_over_tcp(self) -> Any:
        return deferToThread(self.away_long_over_tcp)
