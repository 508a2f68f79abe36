"""
Integration tests for the container runtime (L{ross.engine.runtime}): real
shims, namespaces, mounts and cgroups around a busybox root filesystem.
Each test checks it left no mount, cgroup, shim or state behind.
"""

from __future__ import annotations

import os
import signal
from typing import cast

from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import deferLater
from twisted.trial.unittest import SkipTest, TestCase

from ross import errors
from ross.engine.reactors import engine_reactor
from ross.engine.runtime import spec as rs
from ross.engine.runtime.runtime import ContainerStartError, ExitStatus, Runtime, ShimHandle
from ross.testing.containers import catches
from ross.testing.runtime import RuntimeHarness


def needs_root() -> None:
    if os.geteuid() != 0:
        raise SkipTest("the runtime needs root")


class RunTests(RuntimeHarness, TestCase):
    """
    A container runs to completion: exit codes, start errors, identity,
    logs.
    """

    def setUp(self) -> None:
        needs_root()
        self.setUpRuntime()

    async def test_exit_zero(self) -> None:
        """
        A command that succeeds exits 0, its output in the log.
        """
        status, out, err = await self.run_container(self.spec("echo", "hello"))
        self.assertEqual((status.exit_code, status.signal, status.error), (0, 0, ""))
        self.assertEqual((out, err), (b"hello\n", b""))
        self.assertGreater(status.finished_ns, status.started_ns)

    async def test_spawned_without_fork(self) -> None:
        """
        The daemon runs gRPC threads, so the shim parent (which every shim
        is forked from) is spawned with posix_spawn, never fork, whatever
        the daemon's working directory.
        """

        def no_fork() -> int:
            raise AssertionError("the daemon forked")

        self.patch(os, "fork", no_fork)
        here = os.getcwd()
        os.chdir("/")
        self.addCleanup(os.chdir, here)
        status, out, err = await self.run_container(self.spec("echo", "spawned"))
        self.assertEqual((status.exit_code, out), (0, b"spawned\n"))

    def shim_parents(self) -> list[int]:
        """
        The shim parents this process runs: its children whose command
        line is L{ross.engine.runtime.shim.serve_forks}'s.
        """
        found = []
        for name in os.listdir("/proc"):
            if name.isdigit():
                try:
                    with open(f"/proc/{name}/stat") as f:
                        ppid = int(f.read().rpartition(")")[2].split()[1])
                    if ppid == os.getpid() and b"serve_forks" in _cmdline(int(name)):
                        found.append(int(name))
                except (FileNotFoundError, ProcessLookupError):
                    continue
        return found

    async def test_shims_forked_from_one_parent(self) -> None:
        """
        Every shim is forked from one shim parent, the runtime's child, so
        the pages of their imported modules are shared: a shim's own
        (private) memory is a fraction of what it maps.
        """
        first = await self.start(self.spec("sleep", "100"))
        second = await self.start(self.spec("sleep", "100"))

        def rollup(pid: int) -> dict[str, int]:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                return {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in list(f)[1:])}

        parents = self.shim_parents()
        self.assertEqual(len(parents), 1, parents)
        self.assertIn(str(self.state_root).encode(), _cmdline(parents[0]))
        for handle in (first, second):
            self.assertEqual(_cmdline(handle.shim_pid), _cmdline(parents[0]))
            memory = rollup(handle.shim_pid)
            self.assertLess(memory["Private_Dirty"] + memory["Private_Clean"], memory["Rss"] // 2, memory)
        for handle in (first, second):
            await handle.kill(signal.SIGKILL)
            await handle.wait().addTimeout(10, reactor)  # bounded: addTimeout

    async def test_shim_parent_killed(self) -> None:
        """
        A shim parent that died (killed, out of memory) is replaced at the
        next start; the containers whose shims it forked run on.
        """
        first = await self.start(self.spec("sleep", "100"))
        (parent,) = self.shim_parents()
        os.kill(parent, signal.SIGKILL)
        status, out, _ = await self.run_container(self.spec("echo", "again"))
        self.assertEqual((status.exit_code, out), (0, b"again\n"))
        (replaced,) = self.shim_parents()
        self.assertNotEqual(replaced, parent)
        self.assertTrue(os.path.exists(f"/proc/{first.pid}"))
        await first.kill(signal.SIGKILL)
        exited = await first.wait().addTimeout(10, reactor)  # bounded: addTimeout
        self.assertEqual(exited.exit_code, 137)

    async def test_exit_three(self) -> None:
        """
        The command's exit status passes through; stdout and stderr are
        logged apart.
        """
        status, out, err = await self.run_container(self.spec("sh", "-c", "echo out; echo err >&2; exit 3"))
        self.assertEqual(status.exit_code, 3)
        self.assertEqual((out, err), (b"out\n", b"err\n"))

    async def test_not_found(self) -> None:
        """
        A command not in $PATH fails the start with 127 and docker's message.
        """
        spec = self.spec("nosuch")
        # trial annotates assertFailure's result as the Deferred's; it is the error.
        e = cast(ContainerStartError, await self.assertFailure(ensureDeferred(self.start(spec)), ContainerStartError))
        self.assertEqual(e.exit_code, 127)
        self.assertEqual(e.message, 'exec: "nosuch": executable file not found in $PATH')

    async def test_not_executable(self) -> None:
        """
        A file that cannot be executed fails the start with 126.
        """
        e = cast(ContainerStartError,  # the error (see test_not_found)
                 await self.assertFailure(ensureDeferred(self.start(self.spec("/etc/passwd"))), ContainerStartError))
        self.assertEqual(e.exit_code, 126)
        self.assertIn("permission denied", e.message)

    async def test_pid1_and_isolation(self) -> None:
        """
        The command is PID 1 and sees only the container's processes.
        """
        status, out, _ = await self.run_container(self.spec("sh", "-c", "echo $$; ls /proc | grep -c '^[0-9]'"))
        self.assertEqual(status.exit_code, 0)
        pid, count = out.split()
        self.assertEqual(pid, b"1")
        self.assertLessEqual(int(count), 3)

    async def test_hostname_env_user_workdir(self) -> None:
        """
        Hostname, environment, user (resolved in the container's passwd),
        groups and working directory are the spec's.
        """
        spec = self.spec("sh", "-c", "hostname; echo $FOO; id -u; id -g; pwd; echo $HOME; cat /etc/hostname",
                         hostname="web1", env=("FOO=bar baz",), user="www-data", cwd="/var/www")
        status, out, err = await self.run_container(spec)
        self.assertEqual((status.exit_code, err), (0, b""))
        self.assertEqual(out.decode().split("\n"), ["web1", "bar baz", "33", "33", "/var/www", "/var/www", "web1", ""])

    async def test_unknown_user(self) -> None:
        """
        A user name the container's passwd lacks fails the start (125).
        """
        e = cast(ContainerStartError,  # the error (see test_not_found)
                 await self.assertFailure(ensureDeferred(self.start(self.spec("true", user="nobody2"))),
                                          ContainerStartError))
        self.assertEqual(e.exit_code, 125)
        self.assertIn("unable to find user nobody2", e.message)

    async def test_mounts(self) -> None:
        """
        Read-only and read-write bind mounts and tmpfs mounts are where the
        spec puts them; a read-only one refuses writes.
        """
        rw = self.base / "rw"
        ro = self.base / "ro"
        rw.mkdir()
        ro.mkdir()
        (ro / "file").write_text("from host\n")
        spec = self.spec(
            "sh", "-c", "cat /ro/file; echo x > /ro/new || echo refused; echo written > /rw/out; "
                        "grep ' /scratch ' /proc/mounts | cut -d' ' -f3; echo t > /scratch/t && cat /scratch/t",
            mounts=(rs.BindMount(str(ro), "/ro", readonly=True), rs.BindMount(str(rw), "/rw"),
                    rs.TmpfsMount("/scratch", size=1 << 20)))
        status, out, err = await self.run_container(spec)
        self.assertEqual(status.exit_code, 0)
        self.assertEqual(out, b"from host\nrefused\ntmpfs\nt\n")
        self.assertEqual((rw / "out").read_text(), "written\n")
        self.assertFalse((ro / "new").exists())

    async def test_readonly_rootfs(self) -> None:
        """
        With a read-only root, writing to it fails, /etc/hosts, hostname and
        resolv.conf included (docker's), and /tmp-like tmpfs work.
        """
        spec = self.spec("sh", "-c", "touch /x || echo refused; for f in hosts hostname resolv.conf; do "
                         "echo >> /etc/$f || echo $f refused; done", readonly=True)
        status, out, _ = await self.run_container(spec)
        self.assertEqual(out, b"refused\nhosts refused\nhostname refused\nresolv.conf refused\n")
        self.assertFalse((self.rootfs / "x").exists())

    async def test_log_binary_round_trip(self) -> None:
        """
        Every byte value comes back from the log unchanged, lines split at
        newlines.
        """
        data = bytes(range(256)) * 4
        (self.rootfs / "data.bin").write_bytes(data)
        status, out, _ = await self.run_container(self.spec("cat", "/data.bin"))
        self.assertEqual(status.exit_code, 0)
        self.assertEqual(out, data)

    async def test_log_rotation(self) -> None:
        """
        With max-size and max-file, the log rotates into numbered files, each
        within the size, the newest lines kept in order.
        """
        log = rs.LogConfig(path=str(self.base / "rot.log"), max_size=1000, max_files=3)
        spec = self.spec("sh", "-c", "i=0; while [ $i -lt 300 ]; do echo line$i; i=$((i+1)); done", log=log)
        status, out, _ = await self.run_container(spec)
        self.assertEqual(status.exit_code, 0)
        files = [self.base / "rot.log", self.base / "rot.log.1", self.base / "rot.log.2"]
        for f in files:
            self.assertLessEqual(f.stat().st_size, 1000)
        self.assertFalse((self.base / "rot.log.3").exists())
        lines = out.decode().split()
        self.assertEqual(lines[-1], "line299")
        self.assertEqual(lines, [f"line{i}" for i in range(300 - len(lines), 300)])

    async def test_bad_spec(self) -> None:
        """
        A spec that cannot run is refused with InvalidArgument and nothing
        is created.
        """
        for spec in (self.spec("true", id="bad/id"), self.spec(cwd="/"),
                     self.spec("true", cap_add=("NOSUCH",)),
                     self.spec("true", resources=rs.Resources(memory=1000)),
                     self.spec("true", mounts=(rs.BindMount("relative", "/x"),))):
            await self.assertFailure(self.runtime.create(spec), errors.InvalidArgument)
        self.assertFalse(self.state_root.exists())
        self.ids.clear()


class ControlTests(RuntimeHarness, TestCase):
    """
    A running container: kill, signals, pause, stats, attach before start.
    """

    def setUp(self) -> None:
        needs_root()
        self.setUpRuntime()

    async def test_kill(self) -> None:
        """
        SIGKILL ends PID 1: exit 137, signal 9.
        """
        handle = await self.start(self.spec("sleep", "100"))
        state = await handle.state()
        self.assertEqual((state.status, state.pid), ("running", handle.pid))
        await handle.kill(signal.SIGKILL)
        status = await handle.wait()
        self.assertEqual((status.exit_code, status.signal), (137, 9))
        await self.assertFailure(handle.kill(signal.SIGKILL), errors.FailedPrecondition)

    async def test_signal_handler(self) -> None:
        """
        A signal reaches the command, which handles it its way.
        """
        handle = await self.start(self.spec("sh", "-c", "trap 'echo got; exit 7' TERM; echo ready; "
                                                        "while true; do sleep 0.05; done"))
        got = []
        attachment = await handle.attach(lambda stream, data: got.append(data))
        # Not before the shell has its trap: a PID 1 without a handler
        # ignores SIGTERM, and the container would run on.
        for _ in range(500):
            if catches(handle.pid, signal.SIGTERM):
                break
            await deferLater(reactor, 0.02, lambda: None)
        else:
            self.fail("the shell set no SIGTERM trap in 10 s")
        await handle.kill(signal.SIGTERM)
        status = await handle.wait()
        await attachment.done
        self.assertEqual(status.exit_code, 7)
        self.assertIn(b"got\n", b"".join(got))

    async def test_pid1_ignores_unhandled(self) -> None:
        """
        PID 1 without a handler ignores SIGTERM (so stop needs SIGKILL).
        """
        handle = await self.start(self.spec("sleep", "100"))
        await handle.kill(signal.SIGTERM)
        state = await handle.state()
        self.assertEqual(state.status, "running")

    async def test_pause_resume(self) -> None:
        """
        Pause freezes every process (freezer FROZEN), resume thaws them.
        """
        handle = await self.start(self.spec("sleep", "100"))
        await handle.pause()
        self.assertEqual((await handle.state()).status, "paused")
        freezer = f"/sys/fs/cgroup/freezer/{self.cgroup_parent}/{handle.id}/freezer.state"
        with open(freezer) as f:
            self.assertEqual(f.read().strip(), "FROZEN")
        with open(f"/proc/{handle.pid}/status") as f:
            pass
        await handle.resume()
        self.assertEqual((await handle.state()).status, "running")
        with open(freezer) as f:
            self.assertEqual(f.read().strip(), "THAWED")

    async def test_kill_paused(self) -> None:
        """
        A paused container can be killed.
        """
        handle = await self.start(self.spec("sleep", "100"))
        await handle.pause()
        await handle.kill(signal.SIGKILL)
        self.assertEqual((await handle.wait()).exit_code, 137)

    async def test_stats(self) -> None:
        """
        Stats give the container's cgroup counters.
        """
        handle = await self.start(self.spec("sleep", "100", resources=rs.Resources(memory=64 << 20)))
        stats = await handle.stats()
        self.assertEqual(stats.pids, 1)
        self.assertEqual(stats.memory_limit, 64 << 20)
        self.assertGreater(stats.memory_usage, 0)
        self.assertGreater(stats.system_cpu_ns, 0)

    async def test_attach_before_start(self) -> None:
        """
        A client attached between create and start sees all the output, in
        order per stream, then the exit status.
        """
        handle = await self.runtime.create(self.spec("sh", "-c", "echo one; echo two >&2; echo three"))
        self.handles.append(handle)
        got: list[tuple[str, bytes]] = []
        attachment = await handle.attach(lambda stream, data: got.append((stream, data)))
        await handle.start()
        status = await attachment.done
        assert status is not None, "the attachment ended before the exit"
        self.assertEqual(status.exit_code, 0)
        self.assertEqual(b"".join(d for s, d in got if s == "stdout"), b"one\nthree\n")
        self.assertEqual(b"".join(d for s, d in got if s == "stderr"), b"two\n")

    async def test_stdin_pipe(self) -> None:
        """
        With open stdin, input from the attached client reaches the command;
        closing stdin gives it EOF.
        """
        handle = await self.runtime.create(self.spec("cat", open_stdin=True))
        self.handles.append(handle)
        got: list[bytes] = []
        attachment = await handle.attach(lambda stream, data: got.append(data), stdin=True)
        await handle.start()
        attachment.write(b"hi\n" + bytes(range(256)))
        await attachment.close_stdin()
        status = await attachment.done
        assert status is not None, "the attachment ended before the exit"
        self.assertEqual(status.exit_code, 0)
        self.assertEqual(b"".join(got), b"hi\n" + bytes(range(256)))


class RestartTests(RuntimeHarness, TestCase):
    """
    The daemon goes away (its connection dropped, a new Runtime made):
    shims and containers run on; reconnect finds them, or their exit.
    """

    def setUp(self) -> None:
        needs_root()
        self.setUpRuntime()

    async def test_reconnect_running(self) -> None:
        """
        A running container is found again, same PID, and can be killed
        through the new handle.
        """
        handle = await self.start(self.spec("sleep", "100"))
        handle.close()
        self.failureResultOf(handle.exited)
        runtime = Runtime(engine_reactor(reactor), self.state_root)
        again = await runtime.reconnect(handle.id)
        self.assertIsInstance(again, ShimHandle)
        assert isinstance(again, ShimHandle)
        self.handles.append(again)
        self.assertEqual((again.pid, again.status), (handle.pid, "running"))
        await again.kill(signal.SIGKILL)
        self.assertEqual((await again.exited).exit_code, 137)

    async def test_exited_while_away(self) -> None:
        """
        A container that exits while nobody is connected records its exit
        status and its output; reconnect gives the status.
        """
        ctl = self.base / "ctl"
        ctl.mkdir()
        os.mkfifo(ctl / "fifo")
        spec = self.spec("sh", "-c", "read x < /ctl/fifo; echo after $x; exit 5",
                         mounts=(rs.BindMount(str(ctl), "/ctl"),))
        handle = await self.start(spec)
        handle.close()
        self.failureResultOf(handle.exited)
        fd = os.open(ctl / "fifo", os.O_WRONLY)
        os.write(fd, b"away\n")
        os.close(fd)
        await self.wait_gone(handle.shim_pid)
        outcome = await Runtime(engine_reactor(reactor), self.state_root).reconnect(handle.id)
        self.assertIsInstance(outcome, ExitStatus)
        assert isinstance(outcome, ExitStatus)
        self.assertEqual(outcome.exit_code, 5)
        self.assertEqual([e.data for e in self.log_entries(spec)], [b"after away\n"])

    async def test_creator_gone_before_start(self) -> None:
        """
        A daemon that dies between create and start leaves no shim behind:
        the shim gives the half set-up container up and records why.
        """
        handle = await self.runtime.create(self.spec("true"))
        handle.close()
        self.failureResultOf(handle.exited)
        await self.wait_gone(handle.shim_pid)
        outcome = await Runtime(engine_reactor(reactor), self.state_root).reconnect(handle.id)
        self.assertIsInstance(outcome, ExitStatus)
        assert isinstance(outcome, ExitStatus)
        self.assertEqual(outcome.exit_code, 137)
        await self.delete(handle.id)

    async def test_reconnect_unknown(self) -> None:
        """
        Reconnecting to a container without state is NotFound.
        """
        await self.assertFailure(self.runtime.reconnect("nosuch"), errors.NotFound)


def _cmdline(pid: int) -> bytes:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read()
