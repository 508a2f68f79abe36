"""
Integration tests for sessions with a shim: exec, PTYs, several attached
clients, scrollback replay, resize, and exec sessions that outlive their
client.
"""

from __future__ import annotations

import os
import signal
from typing import Any, cast

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import deferLater
from twisted.trial.unittest import SkipTest, TestCase

from ross import errors
from ross.engine.runtime import spec as rs
from ross.engine.runtime.runtime import ContainerStartError
from ross.interfaces import IShim
from ross.testing.runtime import RuntimeHarness


class Collector:
    """
    Output of one attachment, with Deferreds for text to appear.
    """

    def __init__(self) -> None:
        self.data = bytearray()
        self.streams: dict[str, bytearray] = {"stdout": bytearray(), "stderr": bytearray()}
        self._waiting: list[tuple[bytes, int, Deferred[bytes]]] = []

    def __call__(self, stream: str, data: bytes) -> None:
        self.data += data
        self.streams[stream] += data
        for item in list(self._waiting):
            needle, start, d = item
            if needle in self.data[start:]:
                self._waiting.remove(item)
                d.callback(bytes(self.data))

    def until(self, needle: bytes, after: int = 0) -> Deferred[bytes]:
        """
        Fires once C{needle} arrived past offset C{after}.
        """
        d: Deferred[bytes] = Deferred()
        if needle in self.data[after:]:
            d.callback(bytes(self.data))
        else:
            self._waiting.append((needle, after, d))
        return d


class SessionTests(RuntimeHarness, TestCase):
    def setUp(self) -> None:
        if os.geteuid() != 0:
            raise SkipTest("the runtime needs root")
        self.setUpRuntime()

    async def sleeper(self, **fields: Any) -> IShim:
        return await self.start(self.spec("sleep", "100", hostname="box", **fields))

    async def test_exec_output_and_code(self) -> None:
        """
        An exec session runs in the container's namespaces and cgroups (its
        cgroup is the root of the container's cgroup namespace: from
        anywhere else it would read "/.."); its output and exit code come
        back.
        """
        handle = await self.sleeper()
        out = Collector()
        session = await handle.exec("e1", rs.ExecProcess(
            args=("sh", "-c", "hostname; cat /proc/1/cmdline; echo; cat /proc/self/cgroup; "
                              "echo oops >&2; exit 3")), on_output=out)
        assert session.attachment is not None
        status = await session.attachment.done
        assert status is not None, "the attachment ended before the exit"
        self.assertEqual(status.exit_code, 3)
        self.assertEqual((await session.wait()).exit_code, 3)
        lines = out.streams["stdout"].decode().splitlines()
        self.assertEqual(lines[:2], ["box", "sleep\x00100\x00"])
        # Every hierarchy's line, v2's ("0::/") too: the helper is forked
        # into the v2 group, and moves itself into the v1 ones.
        with open("/proc/self/cgroup") as f:
            hierarchies = len(f.readlines())
        self.assertEqual(len(lines) - 2, hierarchies, lines)
        for line in lines[2:]:
            self.assertTrue(line.endswith(":/"), line)
        self.assertIn("0::/", lines[2:])
        self.assertEqual(bytes(out.streams["stderr"]), b"oops\n")
        state = await handle.state()
        self.assertEqual(state.execs["e1"]["exit"]["exit_code"], 3)

    async def test_exec_stdin_held_back(self) -> None:
        """
        Input a process does not read waits in the client, not in the
        shim: the shim stops reading its client past a mark (its memory
        stays small while 40 MB are sent), and reads on as the process
        takes the input, all of it arriving.
        """
        from twisted.internet import reactor

        handle = await self.sleeper()
        out = Collector()
        session = await handle.exec("e1", rs.ExecProcess(args=("sh", "-c", "sleep 2; wc -c"), open_stdin=True),
                                    on_output=out,
                                    stdin=True)
        attachment = session.attachment
        assert attachment is not None
        chunk = b"x" * (256 * 1024)
        for _ in range(160):
            attachment.write(chunk)
        await deferLater(reactor, 1.0, lambda: None)
        with open(f"/proc/{handle.shim_pid}/status") as f:
            rss_kib = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        self.assertLess(rss_kib, 30 * 1024, "the shim took in input the process does not read")
        await attachment.close_stdin()
        status = await attachment.done
        assert status is not None
        self.assertEqual(out.data.strip(), str(160 * len(chunk)).encode())

    async def test_exec_user_env_cwd(self) -> None:
        handle = await self.sleeper(env=("A=1",))
        out = Collector()
        session = await handle.exec("e1", rs.ExecProcess(
            args=("sh", "-c", "echo $A $B; id -u; pwd"), env=("B=2",), user="33", cwd="/tmp"), on_output=out)
        assert session.attachment is not None
        await session.attachment.done
        self.assertEqual(out.data.decode().split("\n"), ["1 2", "33", "/tmp", ""])

    async def test_exec_detached(self) -> None:
        """
        A detached exec session runs without a client; its status is kept.
        """
        handle = await self.sleeper()
        session = await handle.exec("e1", rs.ExecProcess(args=("sh", "-c", "exit 9")))
        self.assertIsNone(session.attachment)
        self.assertEqual((await session.wait()).exit_code, 9)

    async def test_exec_errors(self) -> None:
        """
        Exec of a missing command fails with 127; a duplicate ID and a
        stopped container are refused.
        """
        handle = await self.sleeper()
        # trial annotates assertFailure's result as the Deferred's; it is the error.
        e = cast(ContainerStartError,
                 await self.assertFailure(ensureDeferred(handle.exec("e1", rs.ExecProcess(args=("nosuch",)))),
                                          ContainerStartError))
        self.assertEqual(e.exit_code, 127)
        # The session's recorded status says the same.
        self.assertEqual((await handle.wait_exec("e1")).exit_code, 127)
        await self.assertFailure(ensureDeferred(handle.exec("e1", rs.ExecProcess(args=("true",)))),
                                 errors.AlreadyExists)
        await handle.kill(signal.SIGKILL)
        await handle.wait()
        await self.assertFailure(ensureDeferred(handle.exec("e2", rs.ExecProcess(args=("true",)))),
                                 errors.FailedPrecondition)

    async def test_exec_killed_with_container(self) -> None:
        """
        Exec sessions end when the container does.
        """
        handle = await self.sleeper()
        session = await handle.exec("e1", rs.ExecProcess(args=("sleep", "100")))
        await handle.kill(signal.SIGKILL)
        self.assertEqual((await session.wait()).signal, 9)

    async def shell(self) -> tuple[object, Collector, object]:
        handle = await self.runtime.create(self.spec("sh", tty=True, open_stdin=True, console_size=(30, 100)))
        self.handles.append(handle)
        out = Collector()
        attachment = await handle.attach(out, stdin=True)
        await handle.start()
        return handle, out, attachment

    async def test_pty_shell(self) -> None:
        """
        A shell on a PTY: typed commands run, the terminal is the
        container's own, resize changes `stty size`, exit ends the session.
        """
        handle, out, attachment = await self.shell()
        attachment.write(b"echo hello-$((1+2)); tty; stty size\n")  # type: ignore[attr-defined]
        text = await out.until(b"30 100")
        self.assertIn(b"hello-3", text)
        self.assertIn(b"/dev/pts/0", text)
        await handle.resize(50, 132)  # type: ignore[attr-defined]
        mark = len(out.data)
        attachment.write(b"stty size\n")  # type: ignore[attr-defined]
        await out.until(b"50 132", mark)
        attachment.write(b"exit 6\n")  # type: ignore[attr-defined]
        self.assertEqual((await attachment.done).exit_code, 6)  # type: ignore[attr-defined]

    async def test_two_clients_and_replay(self) -> None:
        """
        Two attached clients see the same output, input from either works,
        one leaving does not disturb the other; a late client gets the
        scrollback first.
        """
        handle, first, a1 = await self.shell()
        second = Collector()
        a2 = await handle.attach(second, stdin=True)  # type: ignore[attr-defined]
        a1.write(b"echo ping-$((2*3))\n")  # type: ignore[attr-defined]
        await first.until(b"ping-6")
        await second.until(b"ping-6")
        a1.detach()  # type: ignore[attr-defined]
        self.assertIsNone(await a1.done)  # type: ignore[attr-defined]
        a2.write(b"echo pong-$((3*3))\n")
        await second.until(b"pong-9")
        third = Collector()
        a3 = await handle.attach(third, replay=True)  # type: ignore[attr-defined]
        self.assertIn(b"ping-6", await third.until(b"pong-9"))
        a2.write(b"exit\n")
        self.assertEqual((await a2.done).exit_code, 0)
        self.assertEqual((await a3.done).exit_code, 0)
        self.assertNotIn(b"pong", bytes(first.data))

    async def test_attach_since(self) -> None:
        """
        A client attaching again with the count of output bytes it holds
        gets exactly the bytes after them (all of the scrollback once they
        were trimmed away), and, the session having ended meanwhile, those
        and the exit status, where an attach without C{since} is refused.
        """
        from twisted.internet import reactor

        handle = await self.sleeper()
        out = Collector()
        session = await handle.exec("sh1", rs.ExecProcess(args=("sh",), tty=True, open_stdin=True),
                                    on_output=out, stdin=True, input_id="in-1")
        assert session.attachment is not None
        # (Typed before the shell reads, the line would be echoed twice.)
        await out.until(b"# ")
        typed = b"sleep 0.5; echo later-$((2+2))\n"
        session.attachment.write(typed)
        await out.until(b"$((2+2))\r\n")
        held = len(out.data)
        session.attachment.detach()
        await deferLater(reactor, 1.0, lambda: None)
        again = Collector()
        attachment = await handle.attach(again, session="sh1", stdin=True, since=held, input_id="in-1")
        self.assertEqual(attachment.offset, held)
        # The session counted the input it took in under its name; a name it
        # never saw has taken in nothing, and no name gets no count.
        self.assertEqual(attachment.input_offset, len(typed))
        other = await handle.attach(Collector(), session="sh1", input_id="in-2")
        self.assertEqual(other.input_offset, 0)
        other.detach()
        unnamed = await handle.attach(Collector(), session="sh1")
        self.assertIsNone(unnamed.input_offset)
        unnamed.detach()
        await again.until(b"later-4")
        self.assertTrue(bytes(again.data).startswith(b"later-4\r\n"), bytes(again.data))

        # More than the scrollback holds, then gone before it is read.
        attachment.write(b"seq 1 60000; echo seq-$((3+4)); exit 5\n")
        status = await attachment.done
        assert status is not None, "the attachment ended before the exit"
        self.assertEqual(status.exit_code, 5)
        await self.assertFailure(ensureDeferred(handle.attach(Collector(), session="sh1")),
                                 errors.FailedPrecondition)
        last = Collector()
        ended = await handle.attach(last, session="sh1", since=held)
        self.assertEqual((await ended.done).exit_code, 5)  # type: ignore[union-attr]
        total = held + len(again.data)
        self.assertGreater(ended.offset, held)
        self.assertEqual(ended.offset + len(last.data), total)
        self.assertTrue(bytes(last.data).endswith(b"seq-7\r\n"))
        self.assertEqual(bytes(last.data), bytes(again.data)[ended.offset - held:])
        tail = Collector()
        ended = await handle.attach(tail, session="sh1", since=total - 7)
        self.assertEqual((await ended.done).exit_code, 5)  # type: ignore[union-attr]
        self.assertEqual(bytes(tail.data), b"seq-7\r\n")

    async def test_exec_pty_survives_client(self) -> None:
        """
        An exec session on a PTY outlives its client and is re-attached by
        its ID, scrollback first; resize reaches it.
        """
        handle = await self.sleeper()
        out = Collector()
        session = await handle.exec("sh1", rs.ExecProcess(args=("sh",), tty=True, open_stdin=True),
                                    on_output=out, stdin=True)
        assert session.attachment is not None
        session.attachment.write(b"echo first-$((4+4))\n")
        await out.until(b"first-8")
        session.attachment.detach()
        again = Collector()
        attachment = await handle.attach(again, session="sh1", stdin=True, replay=True)
        await again.until(b"first-8")
        await attachment.resize(40, 90)
        mark = len(again.data)
        attachment.write(b"stty size; exit 2\n")
        status = await attachment.done
        assert status is not None, "the attachment ended before the exit"
        self.assertEqual(status.exit_code, 2)
        self.assertIn(b"40 90", bytes(again.data[mark:]))
        self.assertEqual((await session.wait()).exit_code, 2)
        await self.assertFailure(ensureDeferred(handle.attach(Collector(), session="nosuch")), errors.NotFound)
