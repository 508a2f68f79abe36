"""
Tests for the pure parts of the container set-up: mount options,
capability names, path resolution inside a root, user resolution, the
order cgroup directories are made in.
"""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import cast

from twisted.trial.unittest import SynchronousTestCase

from ross.engine.runtime import cgroups, container, linux
from ross.engine.runtime.container import StartError, open_in_root, resolve_user
from ross.engine.runtime.wire import CgroupGroup, Process
from ross.testing.daemon import REPO


class LinuxTests(SynchronousTestCase):
    def test_mount_options(self) -> None:
        flags, data = linux.mount_options(["ro", "nosuid", "lowerdir=/a:/b", "upperdir=/u", "rbind"])
        self.assertEqual(flags, linux.MS_RDONLY | linux.MS_NOSUID | linux.MS_BIND | linux.MS_REC)
        self.assertEqual(data, "lowerdir=/a:/b,upperdir=/u")

    def test_capabilities(self) -> None:
        self.assertEqual(linux.capability_mask(linux.DEFAULT_CAPABILITIES), 0xA80425FB)
        self.assertEqual(linux.capability_number("cap_sys_admin"), 21)
        with self.assertRaises(ValueError):
            linux.capability_number("FLY")


class InRootTests(SynchronousTestCase):
    """
    Paths inside a container's root resolve inside it, whatever the
    image's links say.
    """

    def setUp(self) -> None:
        self.root = os.path.abspath(self.mktemp())
        self.outside = os.path.abspath(self.mktemp())
        os.makedirs(self.outside)
        os.makedirs(self.root + "/etc/real")
        os.symlink("/etc/real", self.root + "/abs")
        os.symlink("../../../../..", self.root + "/etc/up")
        os.symlink("loop", self.root + "/loop")
        os.symlink(self.outside, self.root + "/host")
        os.symlink("../" * 20 + self.outside.lstrip("/"), self.root + "/climb")
        with open(self.root + "/file", "w"):
            pass
        self.rootfd = os.open(self.root, os.O_PATH | os.O_DIRECTORY)
        self.addCleanup(os.close, self.rootfd)

    def resolve(self, path: str, create: str = "") -> str:
        fd = open_in_root(self.rootfd, path, create=create)
        try:
            return os.readlink(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)

    def test_stays_inside(self) -> None:
        """
        Absolute links, ".." and links climbing out resolve within the root.
        """
        self.assertEqual(self.resolve("/abs"), self.root + "/etc/real")
        self.assertEqual(self.resolve("/../../etc"), self.root + "/etc")
        self.assertEqual(self.resolve("/etc/up/etc"), self.root + "/etc")
        self.assertEqual(self.resolve("/"), self.root)

    def test_host_paths(self) -> None:
        """
        A link to a host directory, direct or climbing, is made (with
        create) inside the root; nothing appears on the host.
        """
        self.assertEqual(self.resolve("/host/x", create="dir"), self.root + self.outside + "/x")
        self.assertEqual(self.resolve("/climb/f", create="file"), self.root + self.outside + "/f")
        self.assertEqual(os.listdir(self.outside), [])
        self.assertTrue(os.path.isfile(self.root + self.outside + "/f"))

    def test_missing(self) -> None:
        with self.assertRaises(FileNotFoundError):
            self.resolve("/nope/x")

    def test_loop(self) -> None:
        with self.assertRaises(StartError):
            self.resolve("/loop/x")

    def test_file_in_the_way(self) -> None:
        with self.assertRaises(StartError):
            self.resolve("/file/x", create="dir")

    def test_kernel_filesystems(self) -> None:
        """
        With refuse_kernel_fs, a path on procfs or sysfs is refused.
        """
        host = os.open("/", os.O_PATH | os.O_DIRECTORY)
        self.addCleanup(os.close, host)
        for path in ("/proc/sys", "/sys/kernel"):
            with self.assertRaises(StartError):
                os.close(open_in_root(host, path, refuse_kernel_fs=True))


class UserTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.passwd = self.mktemp()
        self.group = self.mktemp()
        with open(self.passwd, "w") as f:
            f.write("root:x:0:0:root:/root:/bin/sh\nweb:x:33:33::/var/www:/bin/false\n")
        with open(self.group, "w") as f:
            f.write("root:x:0:\nweb:x:33:\nstaff:x:50:web,other\n")

    def resolve(self, user: str, extra: list[str] | None = None) -> tuple[int, int, list[int], str]:
        return resolve_user(user, extra or [], self.passwd, self.group)

    def test_forms(self) -> None:
        self.assertEqual(self.resolve(""), (0, 0, [0], "/root"))
        self.assertEqual(self.resolve("web"), (33, 33, [33, 50], "/var/www"))
        self.assertEqual(self.resolve("33:staff"), (33, 50, [50], "/var/www"))
        self.assertEqual(self.resolve("1000"), (1000, 0, [0], "/"))
        self.assertEqual(self.resolve("1000:1000", ["staff", "7"]), (1000, 1000, [7, 50, 1000], "/"))

    def test_not_regular_files(self) -> None:
        """
        A passwd or group file that is a FIFO or a device reads as missing,
        without blocking or reading forever (a hostile image's).
        """
        os.unlink(self.passwd)
        os.mkfifo(self.passwd)
        os.unlink(self.group)
        os.symlink("/dev/zero", self.group)
        self.assertEqual(self.resolve(""), (0, 0, [0], "/"))
        self.assertEqual(self.resolve("1000:7"), (1000, 7, [7], "/"))
        with self.assertRaises(StartError):
            self.resolve("web")

    def test_comments_and_blank_lines(self) -> None:
        with open(self.passwd, "a") as f:
            f.write("\n# web2:x:34:34::/:/bin/sh\n  \nlast:x:7:7::/home/last:/bin/sh")
        self.assertEqual(self.resolve("last"), (7, 7, [7], "/home/last"))
        with self.assertRaises(StartError):
            self.resolve("# web2")

    def test_out_of_range(self) -> None:
        """
        An id past the kernel's 31 bits, asked for or in the image's files,
        is refused with runc's message.
        """
        with open(self.passwd, "a") as f:
            f.write("big:x:4294967296:0::/:/bin/sh\n")
        for user, extra in [("99999999999", []), ("0:2147483648", []), ("big", []), ("web", ["3000000000"])]:
            with self.assertRaises(StartError) as cm:
                self.resolve(user, extra)
            self.assertEqual((cm.exception.code, str(cm.exception.message)),
                             (125, "uids and gids must be in range 0-2147483647"), user)
        self.assertEqual(self.resolve("2147483647:2147483647"), (2147483647, 2147483647, [2147483647], "/"))

    def test_unknown(self) -> None:
        with self.assertRaises(StartError) as cm:
            self.resolve("nobody")
        self.assertEqual(cm.exception.code, 125)
        with self.assertRaises(StartError):
            self.resolve("web:nogroup")


class CgroupOrderTests(SynchronousTestCase):
    """
    A v2 group's controllers are enabled top down, as the kernel wants:
    writing "+hugetlb" into a group's cgroup.subtree_control fails with
    ENOENT unless its parent already hands hugetlb down.
    """

    def setUp(self) -> None:
        self.mount = self.mktemp()
        os.mkdir(self.mount)
        self.enabled: dict[str, set[str]] = {self.mount: set()}
        real_mkdir = os.mkdir

        def mkdir(path: str, mode: int = 0o777) -> None:
            real_mkdir(path, mode)
            self.enabled[path] = set()

        self.writes: list[str] = []

        def read(path: str) -> str:
            group, name = os.path.split(path)
            self.assertEqual(name, "cgroup.subtree_control")
            return " ".join(sorted(self.enabled[group])) + "\n"

        def write(path: str, value: str) -> None:
            group, name = os.path.split(path)
            self.assertEqual(name, "cgroup.subtree_control")
            self.writes.append(group)
            wanted = {word[1:] for word in value.split()}
            if group != self.mount and not wanted <= self.enabled[os.path.dirname(group)]:
                raise cgroups.CgroupError(f"cannot write {value!r} to {path}: No such file or directory")
            self.enabled[group] |= wanted

        self.patch(os, "mkdir", mkdir)
        self.patch(cgroups, "_write", write)
        self.patch(cgroups, "_read", read)

    def group(self, parent: str) -> CgroupGroup:
        return {"path": os.path.join(self.mount, parent, "c1"), "version": 2, "controllers": ["hugetlb"],
                "mount": self.mount, "options": ""}

    def test_new_parents(self) -> None:
        """
        Parents made for the first container get the controllers after
        the root does, and hand them down to the container's group.
        """
        group = self.group("ross/inner")
        cgroups._make_dirs(group, {})
        inner = os.path.join(self.mount, "ross", "inner")
        self.assertEqual(self.enabled[inner], {"hugetlb"})
        self.assertEqual(self.enabled[os.path.dirname(inner)], {"hugetlb"})
        self.assertEqual(self.enabled[group["path"]], set())

    def test_parent_left_without_controllers(self) -> None:
        """
        A parent that exists without the controllers (made by a start
        cut short) gets them.
        """
        os.makedirs(os.path.join(self.mount, "ross"))
        self.enabled[os.path.join(self.mount, "ross")] = set()
        cgroups._make_dirs(self.group("ross"), {})
        self.assertEqual(self.enabled[os.path.join(self.mount, "ross")], {"hugetlb"})

    def test_handed_down_already(self) -> None:
        """
        Groups that hand the controllers down already are not written
        again: each write makes the kernel walk every group below, every
        running container's.
        """
        cgroups._make_dirs(self.group("ross/inner"), {})
        self.assertEqual(len(self.writes), 3)
        del self.writes[:]
        second = self.group("ross/inner")
        second["path"] = os.path.join(self.mount, "ross", "inner", "c2")
        cgroups._make_dirs(second, {})
        self.assertEqual(self.writes, [])
        self.assertTrue(os.path.isdir(second["path"]))


class CpusetInheritanceTests(SynchronousTestCase):
    """
    A v1 cpuset group gets its parent's cpus and mems (tasks cannot join
    an empty one); the groups above containers have the kernel copy them
    into each new child (cgroup.clone_children), so that a container's
    start writes none: a write is checked against every sibling's.
    """

    def setUp(self) -> None:
        self.mount = self.mktemp()
        self.files: dict[str, str] = {}
        self.writes: list[str] = []
        os.mkdir(self.mount)
        self.files.update({os.path.join(self.mount, "cpuset.cpus"): "0-1\n",
                           os.path.join(self.mount, "cpuset.mems"): "0\n",
                           os.path.join(self.mount, "cgroup.clone_children"): "0\n"})
        real_mkdir = os.mkdir

        def mkdir(path: str, mode: int = 0o777) -> None:
            real_mkdir(path, mode)
            parent = os.path.dirname(path)
            cloned = self.files[os.path.join(parent, "cgroup.clone_children")] == "1\n"
            for name in ("cpuset.cpus", "cpuset.mems"):
                self.files[os.path.join(path, name)] = self.files[os.path.join(parent, name)] if cloned else "\n"
            self.files[os.path.join(path, "cgroup.clone_children")] = "0\n"

        def write(path: str, value: str) -> None:
            self.writes.append(os.path.relpath(path, self.mount))
            self.files[path] = value.strip() + "\n"

        self.patch(os, "mkdir", mkdir)
        self.patch(cgroups, "_write", write)
        self.patch(cgroups, "_read", lambda path: self.files[path])

    def group(self, name: str) -> CgroupGroup:
        return {"path": os.path.join(self.mount, "ross", name), "version": 1, "controllers": ["cpuset"],
                "mount": self.mount, "options": ""}

    def test_children_cloned(self) -> None:
        first = self.group("c1")
        cgroups._make_dirs(first, {})
        self.assertEqual(self.files[os.path.join(first["path"], "cpuset.cpus")], "0-1\n")
        self.assertEqual(self.files[os.path.join(first["path"], "cpuset.mems")], "0\n")
        self.assertEqual(sorted(self.writes), ["ross/cgroup.clone_children", "ross/cpuset.cpus", "ross/cpuset.mems"])
        del self.writes[:]
        second = self.group("c2")
        cgroups._make_dirs(second, {})
        self.assertEqual(self.files[os.path.join(second["path"], "cpuset.cpus")], "0-1\n")
        self.assertEqual(self.writes, [])

    def test_clone_refused(self) -> None:
        """
        A kernel that refuses clone_children: the cpus and mems are
        written by hand, the start goes on.
        """
        def refuse(path: str, value: str) -> None:
            if path.endswith("cgroup.clone_children"):
                raise cgroups.CgroupError(f"cannot write {value!r} to {path}: Permission denied")
            self.writes.append(os.path.relpath(path, self.mount))
            self.files[path] = value.strip() + "\n"

        self.patch(cgroups, "_write", refuse)
        for name in ("c1", "c2"):
            group = self.group(name)
            cgroups._make_dirs(group, {})
            self.assertEqual(self.files[os.path.join(group["path"], "cpuset.cpus")], "0-1\n")
        self.assertIn("ross/c2/cpuset.cpus", self.writes)


class ExecIntoEndedContainerTests(SynchronousTestCase):
    """
    An exec racing the container's end: the helper joined the PID
    namespace, but its init has died since, and the kernel refuses the
    session's process (ENOMEM). The user is told the container is not
    running, not "Cannot allocate memory".
    """

    def test_init_gone(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.addCleanup(ours.close)
        pid = os.fork()
        if pid == 0:
            try:
                ours.close()
                linux.unshare(linux.CLONE_NEWPID)
                init = os.fork()
                if init == 0:
                    os._exit(0)
                os.waitpid(init, 0)
                container.run_exec(cast(Process, {"tty": False}), "h", [], [], theirs, (0, 1, 2), 0)
            finally:
                os._exit(99)
        theirs.close()
        ours.settimeout(10)
        message = ours.recv(4096)
        _, status = os.waitpid(pid, 0)
        self.assertEqual(os.waitstatus_to_exitcode(status), 125)
        self.assertEqual(message, b"E125 the container is not running")


#: A shim asked for an exec after its container's init is gone (reaped
#: by the time the exec comes): what L{Shim._spawn_exec} raises.
_EXEC_AFTER_INIT = """
import os, sys, types
from ross.engine.runtime import shim as shim_module
gone = os.fork()
if gone == 0:
    os._exit(0)
os.waitpid(gone, 0)
base = {"env": [], "cwd": "/", "user": "", "additional_gids": [], "rlimits": [], "privileged": False,
        "cap_add": [], "cap_drop": [], "no_new_privileges": False, "seccomp": None}
shim = shim_module.Shim({"process": base, "hostname": "h", "id": "c" * 64}, ".")
shim.main = types.SimpleNamespace(pid=gone)
try:
    shim._spawn_exec("e1", {"args": ["true"]})
except shim_module.StartFailed as e:
    print(e.code, e.message)
"""


class ExecAfterInitTests(SynchronousTestCase):
    def test_namespaces_gone(self) -> None:
        """
        The shim opens the container's namespaces through its init's
        /proc entry: once the init has exited, the exec is refused as
        "not running" (it was an internal error: ENOENT on /proc/PID/ns).
        """
        result = subprocess.run([sys.executable, "-c", _EXEC_AFTER_INIT], capture_output=True, text=True,
                                timeout=30, env=dict(os.environ, PYTHONPATH=str(REPO)))
        self.assertEqual(result.stdout, "125 the container is not running\n", result.stderr)


class HasExitedTests(SynchronousTestCase):
    def test_peeks(self) -> None:
        """
        A running child has not exited; one that has is seen as exited
        and is still there to be reaped (its status intact); a PID that is
        not a child counts as exited.
        """
        from ross.engine.runtime.shim import has_exited

        reader, writer = os.pipe()
        child = os.fork()
        if child == 0:
            os.close(writer)
            os.read(reader, 1)
            os._exit(7)
        os.close(reader)
        self.assertFalse(has_exited(child))
        os.close(writer)
        for _ in range(1000):
            if has_exited(child):
                break
            time.sleep(0.01)
        self.assertTrue(has_exited(child))
        _, status = os.waitpid(child, 0)
        self.assertEqual(os.waitstatus_to_exitcode(status), 7)
        self.assertTrue(has_exited(child))


class DirectChannelTests(SynchronousTestCase):
    def test_shim_gone_meanwhile(self) -> None:
        """
        A shim that goes as it is asked for a direct channel (its
        container ended meanwhile: the connection is reset): the container
        is not running, not "no direct channel: Connection reset by peer".
        """
        from ross.engine.runtime.runtime import _direct_channel
        from ross.errors import FailedPrecondition

        state_dir = self.mktemp()
        os.mkdir(state_dir)
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(server.close)
        server.bind(os.path.join(state_dir, "shim.sock"))
        server.listen(1)
        server.settimeout(10)

        def reset() -> None:
            conn, _ = server.accept()  # bounded: settimeout above
            conn.settimeout(10)
            conn.recv(1)
            # Closed with the request unread: the client's read is reset.
            conn.close()

        thread = threading.Thread(target=reset)
        thread.start()
        self.addCleanup(thread.join, 10)
        error = self.assertRaises(FailedPrecondition, _direct_channel, Path(state_dir), {"op": "exec"}, (0, 0))
        self.assertEqual(str(error), f"container {os.path.basename(state_dir)} is not running")


class CpusetInheritTests(SynchronousTestCase):
    """
    A v1 cpuset group gets its parent's cpus and mems whoever made it: a
    parent made a moment ago by a concurrent start (or by a start cut
    short) has none yet, and a task cannot join a group under it (ENOSPC).
    """

    def setUp(self) -> None:
        points = [(point, controllers) for point, version, controllers, _ in cgroups.hierarchies()
                  if version == 1 and "cpuset" in controllers]
        if not points:
            self.fail("this host has no cgroup v1 cpuset hierarchy")
        self.mount, controllers = points[0]
        self.parent = os.path.join(self.mount, f"ross-test-cpuset-{os.getpid()}")
        os.mkdir(self.parent)
        self.addCleanup(os.rmdir, self.parent)
        self.group: CgroupGroup = {"path": os.path.join(self.parent, "c1"), "version": 1,
                                   "controllers": list(controllers), "mount": self.mount, "options": ""}

    def read(self, *parts: str) -> str:
        with open(os.path.join(*parts)) as f:
            return f.read().strip()

    def test_parent_made_by_another(self) -> None:
        self.assertEqual(self.read(self.parent, "cpuset.cpus"), "")
        cgroups._make_dirs(self.group, {})
        self.addCleanup(os.rmdir, self.group["path"])
        for name in ("cpuset.cpus", "cpuset.mems"):
            self.assertEqual(self.read(self.parent, name), self.read(self.mount, name))
            self.assertEqual(self.read(self.group["path"], name), self.read(self.mount, name))
        sleeper = subprocess.Popen(["sleep", "30"])
        try:
            cgroups._write(os.path.join(self.group["path"], "tasks"), str(sleeper.pid))
            self.assertEqual(self.read(self.group["path"], "tasks"), str(sleeper.pid))
        finally:
            sleeper.kill()
            sleeper.wait(10)


class ForkIntoCgroupTests(SynchronousTestCase):
    """
    L{linux.fork_into_cgroup}: a child born in a cgroup v2 group, as a fork
    (its own process, Python working in it, its exit status to the parent).
    """

    def setUp(self) -> None:
        v2 = [point for point, version, _, _ in cgroups.hierarchies() if version == 2]
        if not v2:
            self.fail("this host has no cgroup v2 hierarchy")
        self.group = os.path.join(v2[0], f"ross-test-clone3-{os.getpid()}")
        os.mkdir(self.group)
        self.addCleanup(os.rmdir, self.group)

    def test_born_inside(self) -> None:
        reader, writer = os.pipe()
        fd = os.open(self.group, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            pid = linux.fork_into_cgroup(fd)
            if pid == 0:
                try:
                    with open("/proc/self/cgroup") as f:
                        line = next(x for x in f if x.startswith("0::"))
                    os.write(writer, line.encode())
                finally:
                    os._exit(7)
        finally:
            os.close(fd)
        os.close(writer)
        with os.fdopen(reader, "rb") as f:
            line = f.read().decode()
        _, status = os.waitpid(pid, 0)
        self.assertEqual(os.waitstatus_to_exitcode(status), 7)
        self.assertEqual(line.strip(), "0::/" + os.path.basename(self.group))
        with open(os.path.join(self.group, "cgroup.procs")) as f:
            self.assertEqual(f.read(), "")

    def test_refused(self) -> None:
        """
        A descriptor that is not a cgroup's: the kernel makes no child, and
        the caller gets OSError.
        """
        with open("/dev/null") as f:
            error = self.assertRaises(OSError, linux.fork_into_cgroup, f.fileno())
        self.assertIn("clone3", str(error))
        self.assertIn(error.errno, (errno.EBADF, errno.EINVAL))
