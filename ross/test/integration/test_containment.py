"""
Adversarial tests of containment (issue 9, SPEC 10): hostile images made
here and hostile root processes in default containers try to get out.

    1. nothing an image controls is followed on the host (symlinked or
       file-shaped /proc, /sys, /dev, /etc files, workdir, mount targets);
    3. a container cannot change its limits or leave cgroups behind;
    5. no container reaches the host's or another container's keys;
    6. no host fd, cwd or binary reaches a container through a fresh
       start, an exec, or a helper caught while it joins;
    8. bind, volume and tmpfs targets under /proc and /sys are refused.

The probes (L{ross.testing.hostile}) only ever open host-sensitive files to
see whether they could write them: no test writes to the host's /proc/sys.
"""

from __future__ import annotations

import os
import re
import signal
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, Callable, cast

import grpc
from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred, inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest, TestCase

from ross import errors
from ross.engine.runtime import cgroups
from ross.engine.runtime import spec as rs
from ross.engine.runtime.runtime import ContainerStartError
from ross.interfaces import IShim
from ross.testing import hostile
from ross.testing.containers import ContainerTestCase, sleep
from ross.testing.hostile import PROBE, climbing, replace
from ross.testing.images import load_archive
from ross.testing.leaks import cgroups_under
from ross.testing.runtime import RuntimeHarness
from ross.v1 import common_pb2, container_pb2


def _needs_root() -> None:
    if os.geteuid() != 0:
        raise SkipTest("containers need root")


class _HostileRoots(RuntimeHarness):
    """
    Runtime-level set-up for attacks from hand-made root filesystems: a
    canary directory of decoys on the host (links in images point at it),
    and L{attempt}, which starts a container on a hostile root and checks
    that nothing outside that root changed.
    """

    def setUpHostile(self) -> None:
        _needs_root()
        self.setUpRuntime()
        self.canary = hostile.make_canary(self.base / "canary")
        self.boxes = 0

    def watched(self) -> list[str]:
        # Other tests on this machine mount elsewhere; these are the places
        # an escape from this test would land.
        return hostile.mount_points([str(self.base), "/proc", "/sys", "/dev", "/etc"])

    async def attempt(self, mutate: Callable[[Path], None], script: str = hostile.REPORT,
                      **fields: Any) -> tuple[str | None, str]:
        """
        Run C{script} in a container whose root is busybox and the probe,
        C{mutate}d, next to a directory of decoys. Returns (start error or
        None, output). Fails the test if anything outside the root was
        touched: the canary and the decoys (opened, created, changed:
        inotify), the host's mounts (looked at while the container runs,
        and after).
        """
        tc = cast(TestCase, self)
        self.boxes += 1
        box = hostile.make_canary(self.base / f"box{self.boxes}")
        self.rootfs = hostile.hostile_rootfs(box / "rootfs", mutate)
        canary_before = hostile.tree_state(self.canary)
        box_before = hostile.tree_state(box, skip=("rootfs",))
        mounts_before = self.watched()
        tty = bool(fields.get("tty"))
        # Without a terminal the command waits for stdin to close, so the
        # host's mounts are looked at while the container is set up.
        spec = self.spec("sh", "-c", script if tty else "read gate; " + script,
                         open_stdin=not tty, **fields)
        watches = [hostile.Watch(self.canary), hostile.Watch(box, skip=("rootfs",))]
        error, output = None, ""
        try:
            try:
                handle = await self.start(spec)
            except ContainerStartError as e:
                error = e.message
            else:
                tc.assertEqual(self.watched(), mounts_before, "a mount landed on the host")
                if not tty:
                    await handle.close_stdin()
                await handle.wait()
                output = b"".join(e.data for e in self.log_entries(spec)).decode(errors="replace")
            touched = [event for watch in watches for event in watch.events()]
        finally:
            for watch in watches:
                watch.close()
        tc.assertEqual(touched, [], "the runtime touched host files through the image's links")
        tc.assertEqual(self.watched(), mounts_before, "a mount landed on the host")
        tc.assertEqual(hostile.tree_state(self.canary), canary_before, "the host canary changed")
        tc.assertEqual(hostile.tree_state(box, skip=("rootfs",)), box_before,
                       "something changed next to the container's root")
        return error, output

    def names(self, error: str, *paths: str) -> bool:
        """
        Whether start error C{error} names one of the container paths
        C{paths} (the host's path of the root left out: it names the test).
        """
        cleaned = re.sub(re.escape(str(self.base)) + r"\S*?/rootfs(?=/|\b)", "", error)
        return any(re.search(re.escape(p) + r"(?![\w-])", cleaned) for p in paths)

    async def confined(self, mutate: Callable[[Path], None], *refusable: str, **fields: Any) -> None:
        """
        The container on a C{mutate}d root is confined as usual, or its
        start is refused with an error naming one of the container paths
        C{refusable} (none: refusal is not acceptable).
        """
        tc = cast(TestCase, self)
        error, output = await self.attempt(mutate, **fields)
        if error is not None:
            tc.assertTrue(self.names(error, *refusable), f"start refused without naming {refusable}: {error}")
            return
        tc.assertEqual(hostile.containment_problems(output), [], output)


class PathResolutionTests(_HostileRoots, TestCase):
    """
    Class 1: every path the runtime touches in a container's root is
    resolved inside that root; /proc, /sys and /dev are real directories
    with the masks in force, whatever the image made of them.
    """

    timeout = 120

    def setUp(self) -> None:
        self.setUpHostile()

    async def test_plain_root_is_confined(self) -> None:
        """
        The report finds nothing wrong in a well-formed root (so every
        other test here fails only for its attack).
        """
        await self.confined(lambda root: None)

    async def test_proc_absolute_link_inside(self) -> None:
        """
        /proc -> /fakeproc (absolute, a real directory of the image):
        followed on the host, every mask misses and /proc/sys is writable.
        """
        def mutate(root: Path) -> None:
            (root / "fakeproc").mkdir()
            replace(root, "proc", link="/fakeproc")
        await self.confined(mutate, "/proc")

    async def test_proc_absolute_link_to_host(self) -> None:
        """/proc -> the host's canary directory (absolute)."""
        await self.confined(lambda root: replace(root, "proc", link=str(self.canary)), "/proc")

    async def test_proc_relative_link_out(self) -> None:
        """/proc -> ../../../…/canary: climbs out of the root on the host."""
        await self.confined(lambda root: replace(root, "proc", link=climbing(self.canary)), "/proc")

    async def test_proc_link_chain(self) -> None:
        """/proc -> /a -> b -> (absolute) canary: a chain of links."""
        def mutate(root: Path) -> None:
            replace(root, "proc", link="/a")
            os.symlink("b", root / "a")
            os.symlink(str(self.canary), root / "b")
        await self.confined(mutate, "/proc")

    async def test_proc_link_to_parent(self) -> None:
        """/proc -> .. (its parent on the host is the directory of decoys)."""
        await self.confined(lambda root: replace(root, "proc", link=".."), "/proc")

    async def test_proc_is_a_file(self) -> None:
        await self.confined(lambda root: replace(root, "proc", file=True), "/proc")

    async def test_sys_links(self) -> None:
        """
        /sys as an absolute link inside, to the host, climbing out, and to
        its parent: /sys/firmware must stay masked, sysfs read-only.
        """
        def inside(root: Path) -> None:
            (root / "fakesys").mkdir()
            replace(root, "sys", link="/fakesys")
        for mutate in (inside, lambda root: replace(root, "sys", link=str(self.canary)),
                       lambda root: replace(root, "sys", link=climbing(self.canary)),
                       lambda root: replace(root, "sys", link="../..")):
            await self.confined(mutate, "/sys")

    async def test_sys_is_a_file(self) -> None:
        await self.confined(lambda root: replace(root, "sys", file=True), "/sys")

    async def test_dev_links(self) -> None:
        """
        /dev as an absolute link inside, to the host (whose decoy "null"
        must never be what masks are made of), climbing out, and to ".".
        """
        def inside(root: Path) -> None:
            (root / "fakedev").mkdir()
            replace(root, "dev", link="/fakedev")
        for mutate in (inside, lambda root: replace(root, "dev", link=str(self.canary)),
                       lambda root: replace(root, "dev", link=climbing(self.canary)),
                       lambda root: replace(root, "dev", link=".")):
            await self.confined(mutate, "/dev")

    async def test_dev_link_with_terminal(self) -> None:
        """
        With a TTY the runtime opens /dev/pts/ptmx and makes /dev/console:
        never through the image's /dev link on the host.
        """
        for link in (str(self.canary), climbing(self.canary)):
            await self.confined(lambda root: replace(root, "dev", link=link), "/dev", tty=True)

    async def test_dev_is_a_file(self) -> None:
        await self.confined(lambda root: replace(root, "dev", file=True), "/dev")

    async def test_dev_children_links(self) -> None:
        """
        /dev/pts, /dev/shm, /dev/mqueue and /dev/console of the image as
        links to the host or files change nothing: /dev is the runtime's.
        """
        def mutate(root: Path) -> None:
            replace(root, "dev/pts", link=str(self.canary / "pts"))
            replace(root, "dev/shm", link=climbing(self.canary / "shm"))
            replace(root, "dev/mqueue", file=True)
            replace(root, "dev/console", link=str(self.canary / "console"))
            replace(root, "dev/null", link=str(self.canary / "null"))
        await self.confined(mutate, script=hostile.REPORT + "ls /dev/pts; test -c /dev/null && echo null-ok")

    async def test_etc_files_links(self) -> None:
        """
        /etc/hosts, /etc/hostname and /etc/resolv.conf as links to the
        host's decoys (absolute, climbing, chained): the runtime's files
        are mounted inside the root, the decoys untouched.
        """
        def mutate(root: Path) -> None:
            replace(root, "etc/hosts", link=str(self.canary / "hosts"))
            replace(root, "etc/hostname", link=climbing(self.canary / "hostname"))
            replace(root, "etc/resolv.conf", link="/etc/r1")
            os.symlink("../../../../../../../../etc/r2", root / "etc" / "r1")
            os.symlink(str(self.canary / "resolv.conf"), root / "etc" / "r2")
        error, output = await self.attempt(mutate, script="cat /etc/hostname /etc/hosts", hostname="inbox")
        if error is None:
            self.assertIn("inbox\n127.0.0.1\tlocalhost\n", output)

    async def test_etc_link_to_host(self) -> None:
        """The whole /etc an absolute link to the host's canary, then a climbing one."""
        for link in (str(self.canary), climbing(self.canary)):
            error, output = await self.attempt(lambda root: replace(root, "etc", link=link),
                                               script="cat /etc/hostname", hostname="inbox")
            if error is None:
                self.assertEqual(output, "inbox\n")

    async def test_etc_accounts_not_regular(self) -> None:
        """
        /etc/passwd a FIFO and /etc/group a link to /dev/zero: the start
        reads them as missing (before, it blocked on the FIFO for good).
        """
        def mutate(root: Path) -> None:
            replace(root, "etc/passwd")
            os.mkfifo(root / "etc" / "passwd")
            replace(root, "etc/group", link="/dev/zero")
        error, output = await self.attempt(mutate, script="grep ^Uid /proc/self/status")
        self.assertIsNone(error)
        self.assertEqual(output.split(), ["Uid:", "0", "0", "0", "0"])

    async def test_etc_is_a_file(self) -> None:
        """/etc a file where a directory belongs: refused or worked around."""
        error, output = await self.attempt(lambda root: replace(root, "etc", file=True), script="true")
        self.assertTrue(error is None or "etc" in error, error)

    async def test_workdir_links(self) -> None:
        """
        The working directory through links to the host (absolute,
        climbing, to ".."): the command runs inside the root.
        """
        for link in (str(self.canary), climbing(self.canary), ".."):
            error, output = await self.attempt(
                lambda root: replace(root, "work", link=link),
                script=f"/{PROBE} fds | grep ^cwd; touch made-here", cwd="/work/sub")
            if error is None:
                self.assertTrue(output.startswith("cwd inside "), output)

    async def test_workdir_is_a_file(self) -> None:
        error, _ = await self.attempt(lambda root: replace(root, "work", file=True), script="true", cwd="/work")
        self.assertIsNotNone(error)

    async def test_mount_targets_links(self) -> None:
        """
        Bind and tmpfs targets that are links to the host (absolute,
        climbing, chained, to paths the host lacks) are followed inside the
        root, as runc does: the mounts work there and nothing of the host
        is touched.
        """
        source = self.base / "volume"
        source.mkdir()
        (source / "data").write_text("volume\n")
        chained = [("/chain", "/chain2")]
        # Links to host paths that do not exist: followed on the host, the
        # runtime would create them there.
        missing = [(str(self.canary / "made-data"), climbing(self.canary / "made-scratch"))]
        for data, scratch in [(str(self.canary), str(self.canary / "shm")),
                              (climbing(self.canary), climbing(self.canary / "shm")), *chained, *missing]:
            def mutate(root: Path, data: str = data, scratch: str = scratch) -> None:
                replace(root, "data", link=data)
                replace(root, "scratch", link=scratch)
                os.symlink(str(self.canary), root / "chain")
                os.symlink("x/../../../../.." + str(self.canary / "shm"), root / "chain2")
                (root / "x").mkdir()
            error, output = await self.attempt(
                mutate, script="cat /data/data && touch /data/x /scratch/y && grep -c ' tmpfs ' /proc/self/mountinfo",
                mounts=(rs.BindMount(str(source), "/data"), rs.TmpfsMount("/scratch")))
            self.assertIsNone(error, (data, scratch))
            self.assertTrue(output.startswith("volume\n"), (data, scratch, output))


class MountTargetTests(_HostileRoots, TestCase):
    """
    Class 8: bind, volume and tmpfs targets under /proc or /sys are
    refused, also when an image's link leads there, and nothing is mounted.
    """

    timeout = 120

    def setUp(self) -> None:
        self.setUpHostile()
        # The source is a decoy: a refused mount must not even open it.
        self.source = self.canary / "shm"

    async def test_targets_refused(self) -> None:
        """
        Targets under /proc and /sys, however spelled, are refused before
        anything runs, naming /proc or /sys; their neighbours are not.
        """
        targets = ("/proc", "/proc/sys", "/proc/sys/kernel", "/proc/", "//proc/sys", "/tmp/../proc/sys",
                   "/proc/./sys", "/proc/1/root", "/sys", "/sys/fs/cgroup", "/sys/kernel/", "/./sys//kernel")
        for target in targets:
            for mount in (rs.BindMount(str(self.source), target), rs.BindMount(str(self.source), target, True),
                          rs.TmpfsMount(target)):
                failure = await self.assertFailure(ensureDeferred(self.start(self.spec("true", mounts=(mount,)))),
                                                   errors.InvalidArgument)
                message = str(cast(errors.InvalidArgument, failure))
                self.assertTrue("/proc" in message or "/sys" in message, (target, message))
        for target in ("/procfs", "/proc-data", "/system", "/sysroot", "/data/proc", "/data/sys"):
            status, _, err = await self.run_container(self.spec(
                "true", mounts=(rs.BindMount(str(self.source), target, True), rs.TmpfsMount(target + "-tmp"))))
            self.assertEqual(status.exit_code, 0, (target, err))

    async def test_targets_through_links_refused(self) -> None:
        """
        A target that is a link of the image into /proc or /sys (absolute,
        relative, chained) fails the start with an error, and mounts nothing
        on the host.
        """
        links = {"/data": "/proc/sys", "/rel": "proc/sys/kernel", "/deep/er": "../../proc",
                 "/chain": "/hop", "/hop": "sys/kernel", "/cg": "/sys/fs/cgroup"}
        for target in ("/data", "/rel", "/deep/er", "/chain", "/cg"):
            for mount in (rs.BindMount(str(self.source), target), rs.TmpfsMount(target)):
                def mutate(root: Path) -> None:
                    for name, link in links.items():
                        replace(root, name, link=link)
                error, output = await self.attempt(mutate, script="echo started", mounts=(mount,))
                self.assertIsNotNone(error, f"{mount} started: {output!r}")
                self.assertTrue(self.names(cast(str, error), "/proc", "/sys", target), error)


def _summary(findings: list[str]) -> str:
    """How many of each kind of race finding, and the first few."""
    kinds = Counter(f.split()[0] for f in findings)
    return f"{dict(kinds)}; first: {findings[:6]}"


def _fds(output: str) -> list[int]:
    return sorted(int(line.split()[1]) for line in output.splitlines() if line.startswith("fd "))


class ExecLeakTests(RuntimeHarness, TestCase):
    """
    Class 6: a fresh container and an exec session hold only fds 0, 1 and
    2 and a working directory inside the container; a helper caught while
    it joins the container shows nothing of the host (CVE-2019-5736 and
    CVE-2024-21626 class).
    """

    timeout = 180

    def setUp(self) -> None:
        _needs_root()
        self.setUpRuntime()
        hostile.add_probe(self.rootfs)

    async def exec_output(self, handle: IShim, exec_id: str, process: rs.ExecProcess) -> str:
        chunks: list[bytes] = []
        session = await handle.exec(exec_id, process, on_output=lambda stream, data: chunks.append(data))
        assert session.attachment is not None
        self.assertIsNotNone(await session.attachment.done, "the attachment ended before the exit")
        return b"".join(chunks).decode(errors="replace")

    async def test_fresh_container_fds(self) -> None:
        """
        The command of a fresh container, with and without a terminal, with
        and without init, sees fds 0, 1, 2 and its cwd inside.
        """
        variants: list[dict[str, Any]] = [{}, {"tty": True}, {"init": True}, {"cwd": "/tmp", "user": "33"}]
        for fields in variants:
            status, out, _ = await self.run_container(self.spec(f"/{PROBE}", "fds", **fields))
            self.assertEqual((status.exit_code, _fds(out.decode())), (0, [0, 1, 2]), (fields, out))
            self.assertIn("\ncwd inside ", out.decode(), fields)

    async def test_exec_fds(self) -> None:
        """
        An exec session's command, with and without a terminal, as root and
        not, sees fds 0, 1, 2 and its cwd inside.
        """
        handle = await self.start(self.spec("sleep", "100"))
        variants: list[dict[str, Any]] = [{}, {"tty": True}, {"user": "33", "cwd": "/tmp"}, {"privileged": True}]
        for i, fields in enumerate(variants):
            out = await self.exec_output(handle, f"e{i}", rs.ExecProcess(args=(f"/{PROBE}", "fds"), **fields))
            self.assertEqual(_fds(out), [0, 1, 2], (fields, out))
            self.assertIn("\ncwd inside ", out, fields)
        await handle.kill(signal.SIGKILL)
        await handle.wait()

    async def test_workdir_through_fds(self) -> None:
        """
        A working directory of /proc/self/fd/N (CVE-2024-21626): refused, or
        resolved inside the container; never a directory fd of the host.
        """
        workdirs = [f"/proc/self/fd/{n}" for n in range(3, 12)] + ["/proc/self/fd/3/..", "/proc/1/cwd/../.."]
        handle = await self.start(self.spec("sleep", "100"))
        for i, cwd in enumerate(workdirs):
            try:
                out = await self.exec_output(handle, f"e{i}", rs.ExecProcess(args=(f"/{PROBE}", "fds"), cwd=cwd))
            except ContainerStartError:
                continue
            self.assertIn("\ncwd inside ", out, cwd)
        await handle.kill(signal.SIGKILL)
        await handle.wait()
        for cwd in workdirs[:4]:
            try:
                status, output, _ = await self.run_container(self.spec(f"/{PROBE}", "fds", cwd=cwd))
            except ContainerStartError:
                continue
            self.assertIn("\ncwd inside ", output.decode(), cwd)

    async def test_accounts_files_not_regular(self) -> None:
        """
        A container's /etc/passwd made a FIFO and its /etc/group a link to
        /dev/zero. Before, the next exec's process blocked opening the
        FIFO, and with it its shim, which waits for the exec: the exec,
        every later call, and a kill of the container hung. Now both
        files read as missing: an exec as root runs, one as a named user
        is refused, and the container is killed as any other.
        """
        handle = await self.start(self.spec("sleep", "100"))
        out = await self.exec_output(handle, "mk", rs.ExecProcess(args=(
            "sh", "-c", "rm /etc/passwd /etc/group && mkfifo /etc/passwd && ln -s /dev/zero /etc/group && echo made")))
        self.assertEqual(out, "made\n")
        # (Not id: it reads the FIFO itself.)
        running = ensureDeferred(self.exec_output(handle, "id", rs.ExecProcess(args=("grep", "^Uid", "/proc/self/status"))))
        self.assertEqual((await running.addTimeout(30, reactor)).split(), ["Uid:", "0", "0", "0", "0"])
        named = ensureDeferred(self.exec_output(handle, "named", rs.ExecProcess(args=("id",), user="web")))
        with self.assertRaises(ContainerStartError) as cm:
            await named.addTimeout(30, reactor)
        self.assertIn("unable to find user web", str(cm.exception))
        await handle.kill(signal.SIGKILL)
        self.assertIsNotNone(await handle.wait().addTimeout(30, reactor))  # bounded: addTimeout

    async def race(self, execs: int = 40, **fields: Any) -> list[str]:
        """
        The race probe as the container's command while C{execs} exec
        sessions join it; its findings (lines naming what was reachable).
        The image's PATH is long: every helper spends milliseconds looking
        its command up, a window an attacker widens at will.
        """
        dev, ino = hostile.python_identity()
        path = ":".join(f"/nonexistent/{i:04d}" for i in range(3000)) + ":/bin"
        spec = self.spec(f"/{PROBE}", "race", "/tmp/.stop", str(dev), str(ino), "60", PROBE, "true",
                         env=(f"PATH={path}",), **fields)
        handle = await self.start(spec)
        for i in range(execs):
            await handle.exec(f"e{i}", rs.ExecProcess(args=("true",)))
            self.assertEqual((await handle.wait_exec(f"e{i}")).exit_code, 0)
        (self.rootfs / "tmp" / ".stop").touch()
        await handle.wait()
        out = b"".join(e.data for e in self.log_entries(spec) if e.stream == "stdout").decode()
        self.assertIn("\nscans ", out)
        return [line for line in out.splitlines() if line.split(" ", 1)[0] in hostile.RACE_FINDINGS]

    async def test_exec_helpers_unreachable(self) -> None:
        """
        A default container scanning /proc while helpers join it can open
        nothing of them: not their executable (the host's Python), cwd,
        root or fds, and cannot ptrace them; no process of it has a cwd,
        root or fd outside.
        """
        findings = await self.race()
        if findings:
            self.fail(_summary(findings))

    async def test_exec_helpers_with_ptrace(self) -> None:
        """
        With CAP_SYS_PTRACE a container may look at a joining helper, but
        still never reaches a host directory through its cwd, root or fds,
        and never opens the host's Python for writing.
        """
        findings = await self.race(cap_add=("SYS_PTRACE",))
        forbidden = [f for f in findings if f.split()[0] in ("cwd-outside", "root-outside", "fd-outside", "exe-write")]
        if forbidden:
            self.fail(_summary(forbidden))


class _ImageAttacks(ContainerTestCase):
    """
    A daemon with busybox and the image C{probe} (busybox and the probe);
    L{load} makes more images, hostile ones, in the test.
    """

    @inlineCallbacks
    def setUp(self) -> Any:  # type: ignore[override]
        _needs_root()
        yield super().setUp()
        yield self.load("probe")

    def load(self, tag: str, mutate: Callable[[Path], None] | None = None,
             config: dict[str, object] | None = None) -> Deferred[None]:
        def build_and_load() -> None:
            with tempfile.TemporaryDirectory(prefix="ross-hostile-") as tmp:
                load_archive(self.api, hostile.image_archive(Path(tmp) / "image.tar", tag, mutate, config))
        return deferToThread(build_and_load)

    @inlineCallbacks
    def logs_until(self, name: str, marker: bytes) -> Any:
        """The logs of container C{name} once they hold C{marker}."""
        for _ in range(300):
            result = yield self.ross("logs", name)
            if marker in result.stdout:
                return result.stdout
            yield sleep(0.05)
        self.fail(f"{marker!r} never appeared in the logs of {name}: {result.stdout!r} {result.stderr!r}")


def _reached(output: bytes, names: tuple[str, ...], allowed: tuple[str, ...] = ()) -> list[str]:
    """
    Key probe lines saying a key or keyring named one of C{names} was
    reached by an operation not in C{allowed}.
    """
    return [line for line in output.decode(errors="replace").splitlines()
            if len(line.split()) > 2 and line.split()[1] in names and line.split()[2] == "ok"
            and line.split()[0] not in allowed]


class KeyringTests(_ImageAttacks):
    """
    Class 5: no container reads, links, finds or even describes the host's
    keys or another container's, and each has its own session keyring,
    also with seccomp off.
    """

    def plant(self) -> list[str]:
        """
        Keys in this process's session keyring (possessor-only) and user
        keyring (the default permissions); shims inherit the session
        keyring. The probe's arguments to look for them and the session
        keyring itself.
        """
        tag = os.urandom(4).hex()
        session, user = f"ross-host-session-{tag}", f"ross-host-user-{tag}"
        self.addCleanup(hostile.drop_keys, session)
        self.addCleanup(hostile.drop_keys, user)
        self.host_session = hostile.keyring_id(hostile.KEY_SPEC_SESSION_KEYRING)
        return ["host-session-key", str(hostile.plant_key(session, hostile.KEY_SPEC_SESSION_KEYRING, True)), session,
                "host-user-key", str(hostile.plant_key(user, hostile.KEY_SPEC_USER_KEYRING)), user,
                "host-session-ring", str(self.host_session), "_ses"]

    def own_session(self, output: bytes) -> None:
        """The probe's session keyring, if it may ask, is not the host's."""
        for line in output.decode().splitlines():
            if line.startswith("session - ok "):
                self.assertNotEqual(int(line.split()[3]), self.host_session, "the host's session keyring")

    @inlineCallbacks
    def test_host_keys_unreachable(self) -> Any:
        """
        A default container reaches none of the host's keys or keyrings,
        by serial, by search or by request_key.
        """
        args = self.plant()
        result = yield self.ross("run", "--rm", "probe", f"/{PROBE}", "keys", "find", *args)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(_reached(result.stdout, tuple(args[::3])), [], result.stdout)
        self.own_session(result.stdout)

    @inlineCallbacks
    def test_own_session_keyring_without_seccomp(self) -> Any:
        """
        With seccomp unconfined, and privileged, a container still has a
        session keyring of its own: the host's session key and keyring
        are out of its reach (but for describing the keyring by its serial,
        which its permissions grant any process of the same uid).
        """
        args = self.plant()
        for options in (["--security-opt", "seccomp=unconfined"], ["--privileged"]):
            result = yield self.ross("run", "--rm", *options, "probe", f"/{PROBE}", "keys", "find", *args)
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertIn(b"session - ok ", result.stdout, options)
            self.own_session(result.stdout)
            self.assertEqual(_reached(result.stdout, ("host-session-key",)), [], (options, result.stdout))
            self.assertEqual(_reached(result.stdout, ("host-session-ring",), allowed=("describe",)), [],
                             (options, result.stdout))

    @inlineCallbacks
    def test_other_containers_keys(self) -> Any:
        """
        A key another container (seccomp unconfined) keeps in its session
        keyring is out of reach of a default container and of an
        unconfined one.
        """
        description = f"ross-container-{os.urandom(4).hex()}"
        self.addCleanup(hostile.drop_keys, description)
        result = yield self.ross("run", "-d", "--name", "planter", "--security-opt", "seccomp=unconfined",
                                 "probe", f"/{PROBE}", "keys", "plant", description)
        self.assertEqual(result.returncode, 0, result.stderr)
        logs = yield self.logs_until("planter", b"planted ")
        serial = re.search(rb"planted (\d+)", logs)
        self.assertIsNotNone(serial, logs)
        assert serial is not None
        for options in ([], ["--security-opt", "seccomp=unconfined"]):
            result = yield self.ross("run", "--rm", *options, "probe", f"/{PROBE}", "keys", "find",
                                     "other", serial.group(1).decode(), description)
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertEqual(_reached(result.stdout, ("other",)), [], (options, result.stdout))
        result = yield self.ross("rm", "-f", "planter")
        self.assertEqual(result.returncode, 0, result.stderr)


class CgroupTests(_ImageAttacks):
    """
    Class 3: a container cannot raise its limits or move out of its
    cgroups, sees its own cgroup namespace, and whatever cgroups it makes
    go with it: C{rm -f} always works and leaves no directory.
    """

    def attack(self) -> tuple[str, str]:
        tag = os.urandom(4).hex()
        self.addCleanup(self.remove_escapes, tag)
        return hostile.CGROUP_ATTACK.replace("TAG", tag), tag

    def remove_escapes(self, tag: str) -> None:
        for path in hostile.cgroups_named(f"escape-{tag}", self.cgroup_parent):
            hostile.remove_cgroup_tree(path)

    def own_groups(self, cid: str, pid: int) -> list[str]:
        """
        Lines of the host's /proc/PID/cgroup that place process C{pid} of
        container C{cid} outside the container's cgroups (in a hierarchy
        where it has one).
        """
        mine = f"/{self.cgroup_parent}/{cid}"
        outside = []
        for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            names = controllers.split(",") if controllers else ["unified"]
            has_group = any(Path("/sys/fs/cgroup", n, self.cgroup_parent, cid).is_dir() for n in names)
            if has_group and not (path == mine or path.startswith(mine + "/")):
                outside.append(line)
        return outside

    @inlineCallbacks
    def removed(self, name: str, cid: str, tag: str, force: bool = True) -> Any:
        """C{rm [-f]} works and leaves no cgroup of the container or the attack."""
        result = yield self.ross("rm", *(["-f"] if force else []), name)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(cgroups_under(self.cgroup_parent), [], "cgroups left behind")
        self.assertEqual(hostile.cgroups_named(f"escape-{tag}", self.cgroup_parent), [],
                         "cgroups of the container left behind")

    @inlineCallbacks
    def test_limits_and_namespace(self) -> Any:
        """
        A default container cannot raise its memory or pids limit, mount
        cgroupfs, make cgroups or leave its own; /proc/self/cgroup shows
        the root of its own cgroup namespace.
        """
        script, tag = self.attack()
        result = yield self.ross("run", "-d", "--name", "limited", "--memory", "64m", "--pids-limit", "64",
                                 "probe", "sh", "-c", script + "exec sleep 1000")
        self.assertEqual(result.returncode, 0, result.stderr)
        cid = result.stdout.strip().decode()
        logs = yield self.logs_until("limited", b"attack done")
        memory = Path("/sys/fs/cgroup/memory", self.cgroup_parent, cid)
        self.assertEqual((memory / "memory.limit_in_bytes").read_text().strip(), str(64 << 20), logs)
        pids = Path("/sys/fs/cgroup/pids", self.cgroup_parent, cid)
        self.assertEqual((pids / "pids.max").read_text().strip(), "64", logs)
        self.assertEqual([line for line in logs.decode().splitlines()
                          if line.split()[0] in ("raised", "mounted", "remounted", "made", "moved")], [], logs)
        self.assertEqual(self.own_groups(cid, self.record(cid).state.pid), [])
        groups = [line for line in logs.decode().splitlines() if line.startswith("cgroup ")]
        self.assertTrue(groups, logs)
        self.assertEqual([line for line in groups if not line.endswith(":/")], [], logs)
        yield self.removed("limited", cid, tag)

    @inlineCallbacks
    def check_children_removed(self, *options: str) -> Any:
        """
        A container with C{options} that mounts cgroupfs, makes cgroups
        (with processes in them) and moves about stays in its own
        cgroups, and C{rm -f} removes all of it.
        """
        script, tag = self.attack()
        result = yield self.ross("run", "-d", "--name", "maker", *options, "probe", "sh", "-c",
                                 script + "exec sleep 1000")
        self.assertEqual(result.returncode, 0, result.stderr)
        cid = result.stdout.strip().decode()
        logs = yield self.logs_until("maker", b"attack done")
        for pid in cgroups.procs(cgroups.plan(self.cgroup_parent, cid)) | {self.record(cid).state.pid}:
            self.assertEqual(self.own_groups(cid, pid), [], logs)
        outside = [p for p in hostile.cgroups_named(f"escape-{tag}", self.cgroup_parent)
                   if not str(p).startswith(tuple(str(Path("/sys/fs/cgroup", h, self.cgroup_parent, cid))
                                                  for h in os.listdir("/sys/fs/cgroup")))]
        self.assertEqual(outside, [], logs)
        yield self.removed("maker", cid, tag)

    def test_children_removed_with_sys_admin(self) -> Any:
        return self.check_children_removed("--cap-add", "SYS_ADMIN")

    def test_children_removed_privileged(self) -> Any:
        return self.check_children_removed("--privileged")

    @inlineCallbacks
    def test_children_removed_after_exit(self) -> Any:
        """
        A container (CAP_SYS_ADMIN) that made cgroups and exited on its own
        is removed with a plain C{rm}, leaving nothing.
        """
        script, tag = self.attack()
        result = yield self.ross("run", "--name", "quitter", "--cap-add", "SYS_ADMIN", "probe", "sh", "-c",
                                 script + "kill $(jobs -p) 2>/dev/null; exit 0")
        self.assertIn(b"attack done", result.stdout, result.stderr)
        cid = self.record("quitter").id
        yield self.removed("quitter", cid, tag, force=False)


class HostileImageTests(_ImageAttacks):
    """
    Class 1 through the daemon: images loaded as users load them, with
    links the layer applier keeps, run as C{ross run} runs them.
    """

    def canary(self) -> Path:
        canary = hostile.make_canary(Path(self.mktemp()).absolute())
        before = hostile.tree_state(canary)
        mounts = hostile.mount_points([str(canary)])
        watch = hostile.Watch(canary)

        def untouched() -> None:
            try:
                self.assertEqual(watch.events(), [], "the runtime touched host files through the image's links")
            finally:
                watch.close()
            self.assertEqual(hostile.tree_state(canary), before, "the host canary changed")
            self.assertEqual(hostile.mount_points([str(canary)]), mounts, "a mount landed on the host")
        self.addCleanup(untouched)
        return canary

    @inlineCallbacks
    def confined(self, result: Any, *refusable: str) -> Any:
        """
        C{ross run}'s C{result} shows a confined container, or a start
        refused (125) naming one of C{refusable}.
        """
        if result.returncode == 125:
            self.assertTrue(any(re.search(re.escape(p) + r"(?![\w-])", result.stderr.decode()) for p in refusable),
                            result.stderr)
            return
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(hostile.containment_problems(result.stdout.decode()), [], result.stdout)
        yield None

    @inlineCallbacks
    def test_proc_link(self) -> Any:
        """
        An image whose /proc links to a directory of its own: /proc is a
        real, masked, read-only proc in the container, or the start fails.
        """
        def mutate(root: Path) -> None:
            (root / "fakeproc").mkdir()
            replace(root, "proc", link="/fakeproc")
        yield self.load("hostile", mutate)
        result = yield self.ross("run", "--rm", "hostile", "sh", "-c", hostile.REPORT)
        yield self.confined(result, "/proc")

    @inlineCallbacks
    def test_links_to_the_host(self) -> Any:
        """
        An image whose /sys, /dev, /etc files, working directory and mount
        targets link to a host directory (absolute and climbing links):
        nothing there is opened, written or mounted on.
        """
        canary = self.canary()

        def mutate(root: Path) -> None:
            replace(root, "sys", link=str(canary))
            replace(root, "dev", link=climbing(canary))
            replace(root, "etc/hosts", link=str(canary / "hosts"))
            replace(root, "etc/hostname", link=climbing(canary / "hostname"))
            # Not "work": a checkout under /work would make the climbing
            # links above a loop through it (refused, rightly, but naming
            # /etc/hostname rather than what this test looks at).
            replace(root, "workdir", link=str(canary / "fs"))
            replace(root, "data", link=climbing(canary / "irq"))
            replace(root, "scratch", link=str(canary / "shm"))
        yield self.load("hostile", mutate, {"WorkingDir": "/workdir"})
        result = yield self.ross("run", "--rm", "-v", "vol:/data", "--tmpfs", "/scratch", "hostile",
                                 "sh", "-c", hostile.REPORT + f"touch /data/x /scratch/y; /{PROBE} fds | grep ^cwd")
        yield self.confined(result, "/sys", "/dev")
        if result.returncode == 0:
            self.assertIn(b"\ncwd inside /", result.stdout)


class ExecLeakImageTests(_ImageAttacks):
    """
    Class 6 through the daemon and the CLI: C{ross run} and C{ross exec}
    (with and without a terminal) hand the command fds 0, 1, 2 only.
    """

    @inlineCallbacks
    def test_run_and_exec_fds(self) -> Any:
        for options in ([], ["-t"], ["-i"], ["--init"]):
            result = yield self.ross("run", "--rm", *options, "probe", f"/{PROBE}", "fds")
            self.assertEqual(result.returncode, 0, (options, result.stderr))
            self.assertEqual(_fds(result.stdout.decode()), [0, 1, 2], (options, result.stdout))
        result = yield self.ross("run", "-d", "--name", "box", "probe", "sleep", "1000")
        self.assertEqual(result.returncode, 0, result.stderr)
        for options in ([], ["-t"], ["-i"], ["-u", "33"], ["--privileged"], ["-w", "/proc/self/fd/3"]):
            result = yield self.ross("exec", *options, "box", f"/{PROBE}", "fds")
            if options[:1] == ["-w"] and result.returncode != 0:
                continue
            self.assertEqual(result.returncode, 0, (options, result.stderr))
            self.assertEqual(_fds(result.stdout.decode()), [0, 1, 2], (options, result.stdout))
            self.assertIn(b"\ncwd inside ", result.stdout.replace(b"\r\n", b"\n"), options)


class MountTargetApiTests(_ImageAttacks):
    """
    Class 8 through the API: targets under /proc and /sys are refused at
    create with INVALID_ARGUMENT, creating nothing; a target an image's
    link leads there fails the start.
    """

    @inlineCallbacks
    def test_refused_at_create(self) -> Any:
        source = Path(self.mktemp()).absolute()
        source.mkdir()
        requests = []
        for target in ("/proc", "/proc/sys", "/proc/sys/kernel/", "//proc/sys", "/tmp/../proc/sys",
                       "/sys", "/sys/fs/cgroup", "/sys/kernel"):
            requests += [
                container_pb2.HostConfig(binds=[f"{source}:{target}"]),
                container_pb2.HostConfig(binds=[f"named:{target}:ro"]),
                container_pb2.HostConfig(mounts=[container_pb2.MountSpec(type="volume", target=target)]),
                container_pb2.HostConfig(mounts=[container_pb2.MountSpec(type="bind", source=str(source),
                                                                         target=target)]),
                container_pb2.HostConfig(mounts=[container_pb2.MountSpec(type="tmpfs", target=target)]),
                container_pb2.HostConfig(tmpfs={target: "size=1m"}),
            ]
        for host in requests:
            create = container_pb2.CreateContainerRequest(
                config=container_pb2.ContainerConfig(image="probe", cmd=common_pb2.StringList(values=["true"])),
                host_config=host)
            e = yield self.assertFailure(deferToThread(self.api.containers.CreateContainer, create), grpc.RpcError)
            self.assertEqual(e.code(), grpc.StatusCode.INVALID_ARGUMENT, (host, e.details()))
            self.assertTrue("/proc" in e.details() or "/sys" in e.details(), e.details())
        self.assertEqual(list(self.daemon.engine.containers.records), [])
        result = yield self.ross("volume", "ls", "-q")
        self.assertEqual(result.stdout, b"")
        result = yield self.ross("run", "--rm", "-v", f"{source}:/procfs:ro", "--tmpfs", "/system", "probe", "true")
        self.assertEqual(result.returncode, 0, result.stderr)

    @inlineCallbacks
    def test_links_refused_at_start(self) -> Any:
        """
        /data -> /proc/sys and /cg -> ../sys/fs/cgroup in the image: a
        bind, volume or tmpfs there fails the start (125) and nothing is
        mounted.
        """
        def mutate(root: Path) -> None:
            replace(root, "data", link="/proc/sys")
            replace(root, "cg", link="../sys/fs/cgroup")
        yield self.load("hostile", mutate)
        source = Path(self.mktemp()).absolute()
        source.mkdir()
        mounts = hostile.mount_points([str(source), "/proc", "/sys"])
        for target in ("/data", "/cg"):
            for options in (["-v", f"{source}:{target}"], ["-v", f"vol:{target}"], ["--tmpfs", target]):
                result = yield self.ross("run", "--rm", *options, "hostile", "echo", "started")
                self.assertEqual(result.returncode, 125, (options, result.stdout, result.stderr))
                self.assertTrue(re.search(rb"/proc|/sys|" + target.encode(), result.stderr), result.stderr)
        self.assertEqual(hostile.mount_points([str(source), "/proc", "/sys"]), mounts)
        self.assertEqual(os.listdir(source), [])
