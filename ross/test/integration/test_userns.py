"""
Integration tests for containers with a user namespace of their own
(L{ross.engine.runtime.userns}, C{twistd ross --userns-remap}): real
shims, user namespaces and idmapped mounts. Each test checks it left no
mount, cgroup, shim or state behind.
"""

from __future__ import annotations

import io
import os
import pwd
import subprocess
import tarfile
from pathlib import Path
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import SkipTest, TestCase

from ross.engine.containers.changes import layers_of
from ross.test.integration import test_containment as containment
from ross.engine.runtime import spec as rs
from ross.interfaces import IShim
from ross.engine.runtime.userns import DEFAULT_USER, IdRange, resolve_remap
from ross.testing.containers import ContainerTestCase
from ross.test.integration.test_runtime_sessions import Collector
from ross.testing.runtime import RuntimeHarness

# A host range no one uses: container id N is host id BASE + N.
BASE = 1_500_000_000
SIZE = 65536
REMAP = rs.UserNamespace(uid_map=(IdRange(0, BASE, SIZE),), gid_map=(IdRange(0, BASE + SIZE, SIZE),))
GID_BASE = BASE + SIZE


def needs_root() -> None:
    if os.geteuid() != 0:
        raise SkipTest("the runtime needs root")


def host_ids(pid: int) -> tuple[int, int]:
    """The real uid and gid of host process C{pid}."""
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    return int(fields["Uid"].split()[0]), int(fields["Gid"].split()[0])


def remapping(testcase: TestCase) -> dict[str, Any]:
    """
    Options of a test daemon that remaps to BASE (uids) and GID_BASE (gids),
    the ranges of the user "daemon" in subordinate id files of the test's.
    """
    needs_root()
    files = Path(testcase.mktemp()).resolve()
    files.mkdir(parents=True)
    (files / "subuid").write_text(f"# test ranges\nsomeone:100000:65536\ndaemon:{BASE}:{SIZE}\n")
    (files / "subgid").write_text(f"1:{GID_BASE}:{SIZE}\n")
    return {"userns_remap": resolve_remap("daemon", str(files / "subuid"), str(files / "subgid"))}


class RemappedRuntimeTests(RuntimeHarness, TestCase):
    """
    A container with a user namespace: its root is an unprivileged host
    user, its files keep the owners they have on disk.
    """

    def setUp(self) -> None:
        needs_root()
        self.setUpRuntime()

    async def run_remapped(self, *args: str, **fields: object) -> bytes:
        status, out, err = await self.run_container(self.spec(*args, userns=REMAP, **fields))  # type: ignore[arg-type]
        self.assertEqual((status.exit_code, err), (0, b""), status.error)
        return out

    async def sleeper(self, **fields: object) -> IShim:
        return await self.start(self.spec("sleep", "100", userns=REMAP, **fields))  # type: ignore[arg-type]

    async def test_root_inside_remapped_outside(self) -> None:
        """
        The command is root in the container and sees the maps; on the host
        it runs as the remapped uid and gid.
        """
        out = await self.run_remapped("sh", "-c", "id -u; id -g; cat /proc/self/uid_map /proc/self/gid_map")
        lines = [line.split() for line in out.decode().splitlines()]
        self.assertEqual(lines, [["0"], ["0"], ["0", str(BASE), str(SIZE)], ["0", str(GID_BASE), str(SIZE)]])
        handle = await self.sleeper()
        self.assertEqual(host_ids(handle.pid), (BASE, GID_BASE))

    async def test_image_owners(self) -> None:
        """
        Files of the root filesystem keep their owners inside (root's are
        root's), the container's root can write them, and what it creates
        is owned by uid 0 (or the uid it chowns to) on disk.
        """
        os.chown(self.rootfs / "var" / "www", 33, 33)
        out = await self.run_remapped(
            "sh", "-c", "stat -c '%u:%g' /bin/busybox /etc/passwd /var/www; echo x >> /etc/passwd; "
                        "echo made > /made; mkdir /owned && chown 33:33 /owned; stat -c '%u:%g' /made")
        self.assertEqual(out.decode().split(), ["0:0", "0:0", "33:33", "0:0"])
        for path, owner in (("made", (0, 0)), ("owned", (33, 33)), ("etc/passwd", (0, 0))):
            st = os.stat(self.rootfs / path)
            self.assertEqual((st.st_uid, st.st_gid), owner, path)

    async def test_runtime_files(self) -> None:
        """
        /dev's nodes, /etc/hostname and the terminal belong to the
        container's root (and tty group), not to an unmapped host id.
        """
        out = await self.run_remapped(
            "sh", "-c", "stat -c '%n %u:%g' /dev/null /etc/hostname /etc/hosts $(tty); echo renamed > /etc/hostname",
            tty=True)
        self.assertEqual(out.decode().split(), ["/dev/null", "0:0", "/etc/hostname", "0:0", "/etc/hosts", "0:0",
                                                "/dev/pts/0", "0:5"])

    async def test_user(self) -> None:
        """
        A non-root user in the container is the remapped base plus its uid
        on the host, without capabilities.
        """
        handle = await self.sleeper(user="www-data")
        self.assertEqual(host_ids(handle.pid), (BASE + 33, GID_BASE + 33))
        with open(f"/proc/{handle.pid}/status") as f:
            self.assertIn("CapEff:\t0000000000000000\n", f.read())

    async def test_init(self) -> None:
        """
        With --init, the reaper (PID 1) is in the user namespace too, as
        the remapped root, holding no namespace's descriptor.
        """
        handle = await self.sleeper(init=True)
        self.assertEqual(host_ids(handle.pid), (BASE, GID_BASE))
        held = [os.readlink(f"/proc/{handle.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{handle.pid}/fd")]
        self.assertEqual([link for link in held if not link.startswith("/")], [])

    async def test_exec_joins(self) -> None:
        """
        An exec session is in the container's user namespace: root there,
        the remapped uid on the host, the same namespace as PID 1's.
        """
        handle = await self.sleeper()
        out = Collector()
        session = await handle.exec("e1", rs.ExecProcess(args=("sh", "-c", "id -u; cat /proc/self/uid_map; sleep 100")),
                                    on_output=out)
        self.assertEqual(os.stat(f"/proc/{session.pid}/ns/user").st_ino, os.stat(f"/proc/{handle.pid}/ns/user").st_ino)
        self.assertNotEqual(os.stat(f"/proc/{session.pid}/ns/user").st_ino, os.stat("/proc/self/ns/user").st_ino)
        self.assertEqual(host_ids(session.pid), (BASE, GID_BASE))
        await out.until(str(SIZE).encode())
        self.assertEqual(out.data.decode().split(), ["0", "0", str(BASE), str(SIZE)])

    async def test_bind_mount(self) -> None:
        """
        A bound directory is idmapped: a host file of uid 1000 is uid 1000
        inside, and what the container's root writes is uid 0 on disk.
        """
        shared = Path(self.mktemp()).resolve()
        shared.mkdir()
        (shared / "theirs").write_text("x")
        os.chown(shared / "theirs", 1000, 1000)
        out = await self.run_remapped(
            "sh", "-c", "stat -c %u:%g /data/theirs; echo mine > /data/mine",
            mounts=(rs.BindMount(source=str(shared), target="/data"),))
        self.assertEqual(out, b"1000:1000\n")
        st = os.stat(shared / "mine")
        self.assertEqual((st.st_uid, st.st_gid), (0, 0))

    async def test_network_namespace_owned(self) -> None:
        """
        The container's network namespace belongs to its user namespace:
        its root binds port 80, and with NET_ADMIN sets its interfaces.
        """
        out = await self.run_remapped("sh", "-c", "ip link set lo down && ip link set lo up && "
                                                  "(nc -l -p 80 & sleep 0.1; kill $!) && echo ok", cap_add=("NET_ADMIN",))
        self.assertEqual(out, b"ok\n")


class RemappedDaemonTests(ContainerTestCase):
    """
    ``twistd ross --userns-remap``: containers' root is the remapped user
    on the host; images, volumes, diff, export, cp and snapshots keep the
    container's view of owners.
    """

    def daemon_options(self) -> dict[str, Any]:
        return remapping(self)

    @inlineCallbacks
    def cli(self, *args: str, code: int = 0, input: bytes | None = None) -> Any:
        result = yield self.ross(*args, input=input)
        self.assertEqual(result.returncode, code, (args, result.stderr))
        return result

    @inlineCallbacks
    def test_root_is_remapped(self) -> Any:
        """
        The container's root is root inside, the remapped range in its
        uid_map, and the remapped uid in the host's ps; exec joins it.
        """
        result = yield self.cli("run", "--rm", "busybox", "sh", "-c", "id; cat /proc/self/uid_map")
        lines = result.stdout.decode().splitlines()
        self.assertTrue(lines[0].startswith("uid=0(root) gid=0(root)"), lines[0])
        self.assertEqual(lines[1].split(), ["0", str(BASE), str(SIZE)])
        yield self.cli("run", "-d", "--name", "r1", "busybox", "sleep", "1000")
        ps = subprocess.run(["ps", "-o", "uid=", "-p", str(self.record("r1").state.pid)],
                            capture_output=True, text=True, check=True, timeout=30)
        self.assertEqual(ps.stdout.strip(), str(BASE))
        result = yield self.cli("exec", "r1", "sh", "-c", "id -u; cat /proc/self/gid_map")
        self.assertEqual(result.stdout.decode().split(), ["0", "0", str(GID_BASE), str(SIZE)])

    @inlineCallbacks
    def test_sysctls_of_the_links(self) -> Any:
        """
        A --sysctl naming eth0 works in a container whose network
        namespace is its own user namespace's: set once the link is
        plugged there, after the container's set-up.
        """
        result = yield self.cli("run", "--rm", "--sysctl", "net.ipv4.conf.eth0.rp_filter=2", "busybox",
                                "cat", "/proc/sys/net/ipv4/conf/eth0/rp_filter")
        self.assertEqual(result.stdout, b"2\n")

    @inlineCallbacks
    def test_device(self) -> Any:
        """
        --device in a user namespace, where no node can be made: the host's
        node is bound there instead (its owner and mode the host's).
        """
        result = yield self.cli("run", "--rm", "--device", "/dev/zero:/dev/z1", "busybox", "sh", "-c",
                                "stat -c '%t,%T %F' /dev/z1; head -c 3 /dev/z1 | wc -c")
        self.assertEqual(result.stdout.splitlines(), [b"1,5 character special file", b"3"], result.stderr)

    @inlineCallbacks
    def test_user(self) -> Any:
        """
        A non-root user of the container is the remapped base plus its uid
        on the host.
        """
        yield self.cli("run", "-d", "--name", "u1", "--user", "33:33", "busybox", "sleep", "1000")
        ps = subprocess.run(["ps", "-o", "uid=,gid=", "-p", str(self.record("u1").state.pid)],
                            capture_output=True, text=True, check=True, timeout=30)
        self.assertEqual(ps.stdout.split(), [str(BASE + 33), str(GID_BASE + 33)])

    @inlineCallbacks
    def test_storage_keeps_the_container_view(self) -> Any:
        """
        Image files are root's inside; what the container's root makes is
        uid 0 (or what it chowns to) in diff, export, cp and the snapshot
        on disk; cp in writes owners as given.
        """
        yield self.cli("run", "-d", "--name", "s1", "busybox", "sh", "-c",
                       "echo hi > /made && mkdir /web && chown 33:33 /web && sleep 1000")
        result = yield self.cli("exec", "s1", "sh", "-c", "while [ ! -d /web ]; do sleep 0.05; done; "
                                                          "stat -c %u:%g /bin/busybox /etc /made /web")
        self.assertEqual(result.stdout.decode().split(), ["0:0", "0:0", "0:0", "33:33"])
        diff = yield self.cli("diff", "s1")
        self.assertIn("A /made", diff.stdout.decode().splitlines())
        exported = yield self.cli("export", "s1")
        with tarfile.open(fileobj=io.BytesIO(exported.stdout)) as tar:
            owners = {m.name.strip("/").removeprefix("./"): (m.uid, m.gid) for m in tar.getmembers()}
        self.assertEqual((owners["made"], owners["web"], owners["bin/busybox"]), ((0, 0), (33, 33), (0, 0)))
        out = yield self.cli("cp", "s1:/made", "-")
        with tarfile.open(fileobj=io.BytesIO(out.stdout)) as tar:
            self.assertEqual([(m.name, m.uid, m.gid) for m in tar.getmembers()], [("made", 0, 0)])
        upper, _ = layers_of((yield self.daemon.engine.snapshotter.mounts(self.record("s1").snapshot_key)))
        for name, owner in (("made", (0, 0)), ("web", (33, 33))):
            st = os.stat(os.path.join(upper, name))
            self.assertEqual((st.st_uid, st.st_gid), owner, name)
        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w") as tar:
            info = tarfile.TarInfo("given")
            info.uid, info.gid, info.size = 1000, 1000, 2
            tar.addfile(info, io.BytesIO(b"x\n"))
        yield self.cli("cp", "-a", "-", "s1:/tmp", input=archive.getvalue())
        result = yield self.cli("exec", "s1", "stat", "-c", "%u:%g", "/tmp/given")
        self.assertEqual(result.stdout, b"1000:1000\n")
        st = os.stat(os.path.join(upper, "tmp", "given"))
        self.assertEqual((st.st_uid, st.st_gid), (1000, 1000))
        yield self.cli("commit", "s1", "remapped-commit")
        result = yield self.cli("run", "--rm", "remapped-commit", "stat", "-c", "%u:%g", "/made", "/web")
        self.assertEqual(result.stdout.decode().split(), ["0:0", "33:33"])

    @inlineCallbacks
    def test_volume(self) -> Any:
        """
        The container's root writes its volume; the files are uid 0 in the
        volume on the host.
        """
        result = yield self.cli("run", "--rm", "-v", "remapped:/data", "busybox", "sh", "-c",
                                "echo x > /data/f && stat -c %u:%g /data /data/f")
        self.assertEqual(result.stdout.decode().split(), ["0:0", "0:0"])
        volume = self.daemon.engine.volumes.get("remapped")
        st = os.stat(os.path.join(volume.mountpoint, "f"))
        self.assertEqual((st.st_uid, st.st_gid), (0, 0))
        # An empty volume takes the image's content (copy-up) with the
        # owners the container sees there.
        result = yield self.cli("run", "--rm", "-v", "etc:/etc", "busybox", "stat", "-c", "%n %u:%g", "/etc/passwd")
        self.assertEqual((result.returncode, result.stdout), (0, b"/etc/passwd 0:0\n"), result.stderr)

    @inlineCallbacks
    def test_userns_host(self) -> Any:
        """
        --userns host runs the container in the host's user namespace;
        --privileged is allowed only so, and the host's network never.
        """
        result = yield self.cli("run", "--rm", "--userns", "host", "busybox", "cat", "/proc/self/uid_map")
        self.assertEqual(result.stdout.split(), [b"0", b"0", b"4294967295"])
        yield self.cli("run", "--rm", "--userns", "host", "--privileged", "busybox", "true")
        refused = yield self.cli("run", "--rm", "--privileged", "busybox", "true", code=125)
        self.assertIn(b"privileged mode is incompatible with user namespaces", refused.stderr)
        refused = yield self.cli("run", "--rm", "--network", "host", "busybox", "true", code=125)
        self.assertIn(b"cannot share the host's network namespace", refused.stderr)
        refused = yield self.cli("run", "--rm", "--userns", "private", "busybox", "true", code=125)
        self.assertIn(b"invalid USER mode", refused.stderr)

    @inlineCallbacks
    def test_container_network(self) -> Any:
        """
        A container joining another's network joins its user namespace
        too (docker's rule): its root binds port 80 in that network.
        """
        yield self.cli("run", "-d", "--name", "n1", "busybox", "sleep", "1000")
        first = yield self.cli("exec", "n1", "readlink", "/proc/self/ns/user")
        result = yield self.cli("run", "--rm", "--network", "container:n1", "busybox", "sh", "-c",
                                "readlink /proc/self/ns/user; cat /proc/self/uid_map; "
                                "nc -l -p 80 & sleep 0.2; kill $! && echo bound")
        lines = result.stdout.decode().splitlines()
        self.assertEqual(lines[0], first.stdout.decode().strip())
        self.assertEqual(lines[1].split(), ["0", str(BASE), str(SIZE)])
        self.assertEqual(lines[2:], ["bound"])

    @inlineCallbacks
    def test_bridge_network(self) -> Any:
        """
        On the default bridge the container's root has its address and
        reaches the gateway with a raw-socket ping (NET_RAW in its own
        network namespace).
        """
        result = yield self.cli("run", "--rm", "busybox", "sh", "-c",
                                "ip -4 -o addr show eth0 && ping -c 1 -W 5 $(ip route | awk '/default/ {print $3}')")
        self.assertIn(b"inet ", result.stdout)
        self.assertIn(b"1 packets received", result.stdout)


class DefaultRemapTests(TestCase):
    """
    C{--userns-remap default}: the user ross-remap, made when missing
    (it stays: a system user, like docker's dockremap), with ranges
    appended to the subordinate id files when it has none there.
    """

    def test_default(self) -> None:
        needs_root()
        files = Path(self.mktemp()).resolve()
        files.mkdir(parents=True)
        subuid, subgid = files / "subuid", files / "subgid"
        subuid.write_text("someone:100000:65536")
        subgid.write_text("")
        remap = resolve_remap("default", str(subuid), str(subgid))
        assert remap is not None
        self.assertEqual((remap.user, remap.group), (DEFAULT_USER, DEFAULT_USER))
        self.assertEqual((remap.uid_map, remap.gid_map), ((IdRange(0, 165536, 65536),), (IdRange(0, 100000, 65536),)))
        self.assertEqual(subuid.read_text(), f"someone:100000:65536\n{DEFAULT_USER}:165536:65536\n")
        entry = pwd.getpwnam(DEFAULT_USER)
        self.assertLess(entry.pw_uid, 1000)
        self.assertEqual(entry.pw_shell, "/usr/sbin/nologin")
        self.assertEqual(resolve_remap("default", str(subuid), str(subgid)), remap)
        self.assertEqual(subgid.read_text(), f"{DEFAULT_USER}:100000:65536\n")


# ---------------------------------------------------------------- the attacks again


class _Remapped:
    """
    Runtime harness specs with a user namespace of their own (the
    privileged ones excepted: those keep the host's, as --userns host).
    """

    def spec(self, *args: str, **fields: Any) -> rs.ContainerSpec:
        if not fields.get("privileged"):
            fields.setdefault("userns", REMAP)
        return super().spec(*args, **fields)  # type: ignore[misc]


class _RemappedDaemon:
    """A test daemon with --userns-remap (see L{RemappedDaemonTests})."""

    def daemon_options(self) -> dict[str, Any]:
        return remapping(self)  # type: ignore[arg-type]


class RemappedPathResolutionTests(_Remapped, containment.PathResolutionTests):
    """
    The hostile roots of L{containment.PathResolutionTests}, on
    idmapped layers: still resolved inside the root.
    """


class RemappedMountTargetTests(_Remapped, containment.MountTargetTests):
    """
    L{containment.MountTargetTests} with idmapped binds: targets in /proc
    and /sys are refused all the same.
    """


class RemappedExecLeakTests(_Remapped, containment.ExecLeakTests):
    """
    L{containment.ExecLeakTests} with helpers that also join a user
    namespace: still nothing of the host reaches the container.
    """


class RemappedHostileImageTests(_RemappedDaemon, containment.HostileImageTests):
    """L{containment.HostileImageTests} on a remapping daemon."""


class RemappedExecLeakImageTests(_RemappedDaemon, containment.ExecLeakImageTests):
    """L{containment.ExecLeakImageTests} on a remapping daemon."""


class RemappedCgroupTests(_RemappedDaemon, containment.CgroupTests):
    """
    L{containment.CgroupTests} on a remapping daemon: the container's root
    cannot raise its limits or leave cgroups behind either.
    """

    def test_children_removed_privileged(self) -> Any:
        """
        On a remapping daemon --privileged needs --userns host, as docker's
        (RemappedDaemonTests.test_userns_host): so opted out, the container
        still cannot leave cgroups behind.
        """
        return self.check_children_removed("--privileged", "--userns", "host")
