"""
The daemon's state is private (SPEC 10): a real ``twistd ross`` with
containers, env secrets, a volume and logs, and an unprivileged host user
(nobody) trying every file under --root and --exec-root and every
process's command line and environment.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import stat
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Any, Iterator

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from ross.testing.daemon import DaemonProcess, short_tempdir
from ross.testing.images import EPOCH, busybox_layer, docker_archive
from ross.testing.unprivileged import NOBODY, probe_as_nobody

# Bind-mounted into containers from each state directory: what the
# container sees, made by the container's set-up, not daemon state.
_CONTAINER_FILES = {"hosts", "hostname", "resolv.conf"}


def _implied_layer() -> bytes:
    """
    A layer with a file whose directories it does not list.
    """
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("opt/implied/tool")
        info.size, info.mode, info.mtime = 2, 0o755, EPOCH
        tar.addfile(info, io.BytesIO(b"#!"))
    return out.getvalue()


def _content_dir(path: Path, root: Path, exec_root: Path) -> bool:
    """
    Image or user content, whose modes are the image's or the user's:
    snapshot trees, volume data, a container's root mount point.
    """
    rel = path.relative_to(root).parts if path.is_relative_to(root) else ()
    if len(rel) == 5 and rel[:3] == ("snapshots", "overlayfs", "snapshots") and rel[4] in ("fs", "work"):
        return True
    if len(rel) == 3 and rel[0] == "volumes" and rel[2] == "_data":
        return True
    run = path.relative_to(exec_root).parts if path.is_relative_to(exec_root) else ()
    return len(run) == 3 and run[0] == "containers" and run[2] == "rootfs"


def _walk(*tops: Path) -> Iterator[Path]:
    """
    Everything under C{tops}, not following links.
    """
    for top in tops:
        for dirpath, dirnames, filenames in os.walk(top):
            for name in dirnames + filenames:
                yield Path(dirpath) / name


def _state(root: Path, exec_root: Path) -> Iterator[Path]:
    """
    The daemon's own directories and files: everything but content.
    """
    for top in (root, exec_root):
        stack = [top]
        while stack:
            current = stack.pop()
            for entry in os.scandir(current):
                path = Path(entry.path)
                if entry.is_dir(follow_symlinks=False):
                    if not _content_dir(path, root, exec_root):
                        stack.append(path)
                        yield path
                elif path.name not in _CONTAINER_FILES or path.parent.parent != exec_root / "containers":
                    yield path


def _umask(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    raise AssertionError(f"no umask in /proc/{pid}/status")


def _modes(paths: Iterator[Path]) -> dict[str, int]:
    return {str(p): stat.S_IMODE(os.lstat(p).st_mode) for p in paths}


class StatePrivacyTests(TestCase):
    timeout = 240
    maxDiff = None

    def setUp(self) -> None:
        self.base = short_tempdir()
        # Others may pass through the directory above the roots, as they
        # may through /var/lib and /run: only the roots' own modes keep
        # them out.
        os.chmod(self.base, 0o755)
        self.daemon = DaemonProcess(base=self.base)
        self.addCleanup(self.daemon.cleanup)
        self.addCleanup(self.remove_all)
        self.secret = "s3cret-" + os.urandom(8).hex()
        self.exec_secret = "s3cret-exec-" + os.urandom(8).hex()
        self.visible = "visible-" + os.urandom(8).hex()

    def remove_all(self) -> Any:
        if self.daemon.process is None or self.daemon.process.poll() is not None:
            return None

        def remove() -> None:
            ids = self.daemon.ross("ps", "-aq", "--no-trunc").stdout.split()
            if ids:
                self.daemon.ross("rm", "-f", "-v", *[i.decode() for i in ids])
            self.daemon.ross("volume", "rm", "data")

        return deferToThread(remove)

    def ross_ok(self, *args: str) -> bytes:
        result = self.daemon.ross(*args)
        if result.returncode != 0:
            raise AssertionError(f"ross {' '.join(args)} failed: {result.stderr.decode()}")
        return result.stdout

    def populate(self, running: bool = True) -> None:
        """
        Blocking: an image, a volume, a container that exited and logged
        its secret, and (C{running}) one that runs with a secret in its
        environment, writes it to its volume and logs it, and an exec'd
        process with a secret of its own.
        """
        self.daemon.start()
        archive = docker_archive(self.base / "image.tar", layers=[busybox_layer(), _implied_layer()])
        self.ross_ok("load", "-i", str(archive.path))
        self.ross_ok("volume", "create", "data")
        self.ross_ok("run", "--name", "done", "-e", f"SECRET={self.secret}", "busybox", "sh", "-c", 'echo "$SECRET"')
        if not running:
            return
        # $0 of the shell carries a marker nobody must see: proof that the
        # probe reads the command lines of the container's processes.
        self.ross_ok("run", "-d", "--name", "keeper", "-e", f"SECRET={self.secret}", "-v", "data:/data",
                     "-v", f"{self.base}/made/by/ross:/bound", "busybox", "sh", "-c",
                     'echo "$SECRET"; echo "$SECRET" > /data/secret; while true; do sleep 1; done', self.visible)
        self.ross_ok("exec", "-d", "-e", f"EXEC_SECRET={self.exec_secret}", "keeper", "sh", "-c",
                     "while true; do sleep 1; done")
        deadline = time.monotonic() + 15
        while self.secret.encode() not in self.ross_ok("logs", "keeper"):
            if time.monotonic() > deadline:
                raise AssertionError("the container did not log its secret")
            time.sleep(0.05)

    @inlineCallbacks
    def test_other_users_reach_nothing(self) -> Any:
        """
        Nobody can list, read or connect to anything under --root and
        --exec-root (databases with the env, logs, volumes, layers, shim
        state, sockets), and no command line or environment nobody can
        read holds a secret: not the shims', helpers' or daemon's.
        """
        yield deferToThread(self.populate)
        # An environment nobody can read: proof that the probe reads them.
        control_marker = "control-" + os.urandom(8).hex()
        control = subprocess.Popen(["/bin/sleep", "60"], env={"CONTROL": control_marker},
                                   user=NOBODY, group=NOBODY, extra_groups=[])
        self.addCleanup(control.wait)
        self.addCleanup(control.kill)
        root, exec_root = self.daemon.root, self.daemon.exec_root
        paths = [str(root), str(exec_root), *map(str, _walk(root, exec_root))]
        names = {os.path.basename(p) for p in paths}
        # The walk covers the env's database, logs, volume data, blobs,
        # layer files, shim state and sockets.
        for name in ("containers.db", "secret", "busybox", "tool", "state.json", "shim.sock", "ross.sock"):
            self.assertIn(name, names)
        self.assertTrue(any(p.endswith("-json.log") for p in paths))
        self.assertTrue(any("/blobs/sha256/" in p for p in paths))
        probe = yield deferToThread(probe_as_nobody, paths, [self.secret, self.exec_secret, self.visible])
        self.assertEqual(probe.reached, {str(root): "stat", str(exec_root): "stat"})
        self.assertEqual(sorted(probe.found), [self.visible])
        self.assertTrue(all(where.endswith("/cmdline") for where in probe.found[self.visible]))
        control_probe = yield deferToThread(probe_as_nobody, [], [control_marker])
        self.assertEqual(control_probe.found, {control_marker: [f"/proc/{control.pid}/environ"]})
        # Nor in the daemon's log or the shims'.
        self.assertNotIn(self.secret, self.daemon.read_log())
        for shim_log in exec_root.glob("containers/*/shim.log"):
            text = shim_log.read_text(errors="replace")
            self.assertNotIn(self.secret, text)
            self.assertNotIn(self.exec_secret, text)

    @inlineCallbacks
    def test_modes(self) -> Any:
        """
        Every directory and file of the daemon's own is its alone (the API
        sockets 0660, root's group); content keeps the modes it must have:
        image files and the directories a layer implies, a volume's root,
        a bind source Ross made, a container's root, which a container
        user other than root uses as before.
        """
        yield deferToThread(self.populate)
        root, exec_root = self.daemon.root, self.daemon.exec_root
        # What the daemon and its shims make without a mode of their own is
        # theirs alone; the container's processes keep docker's umask.
        assert self.daemon.process is not None
        keeper = json.loads(self.ross_ok("inspect", "keeper"))[0]
        shim = json.loads((exec_root / "containers" / keeper["Id"] / "state.json").read_text())["shim_pid"]
        self.assertEqual([_umask(pid) for pid in (self.daemon.process.pid, shim, keeper["State"]["Pid"])],
                         [0o077, 0o077, 0o022])
        modes = _modes(_state(root, exec_root))
        self.assertEqual(modes.pop(self.daemon.socket), 0o660)
        self.assertEqual(modes.pop(str(exec_root / "docker.sock")), 0o660)
        self.assertEqual(modes.pop(str(exec_root / "cri.sock")), 0o660)
        self.assertEqual(modes.pop(str(exec_root / "direct.sock")), 0o660)
        self.assertIn(str(root / "containers.db"), modes)
        self.assertEqual({p: m for p, m in modes.items() if m & 0o077}, {})
        self.assertEqual(stat.S_IMODE(os.stat(root).st_mode), 0o700)
        self.assertEqual(stat.S_IMODE(os.stat(exec_root).st_mode), 0o700)
        snapshots = root / "snapshots" / "overlayfs" / "snapshots"
        trees = [snapshots / n / "fs" for n in os.listdir(snapshots)]
        self.assertIn(0o755, {stat.S_IMODE(os.stat(t / "bin" / "busybox").st_mode)
                              for t in trees if (t / "bin").exists()})
        implied = [t for t in trees if (t / "opt" / "implied").exists()]
        self.assertEqual([stat.S_IMODE(os.stat(t / "opt" / "implied").st_mode) for t in implied], [0o755])
        self.assertEqual({stat.S_IMODE(os.stat(t).st_mode) for t in trees}, {0o755})
        self.assertEqual(stat.S_IMODE(os.stat(root / "volumes" / "data" / "_data").st_mode), 0o755)
        self.assertEqual([stat.S_IMODE(os.stat(self.base / p).st_mode) for p in ("made", "made/by", "made/by/ross")],
                         [0o755] * 3)
        listing = yield deferToThread(
            self.ross_ok, "run", "--rm", "--user", "65534", "-v", "data:/data", "-v", f"{self.base}/made/by/ross:/bound",
            "busybox", "sh", "-c",
            "ls -ld / /opt/implied /data /bound | cut -c1-10; cat /opt/implied/tool /etc/passwd > /dev/null && id -u")
        self.assertEqual(listing.decode().split(), ["drwxr-xr-x"] * 4 + ["65534"])

    @inlineCallbacks
    def test_older_root_fixed_at_start(self) -> Any:
        """
        A root and exec root an older version left readable (directories
        0755, databases 0644, logs 0640) are private after a start, while
        the image layers and volume data keep every mode they had.
        """
        yield deferToThread(self.populate, False)
        stopped = yield deferToThread(self.daemon.stop)
        self.assertIn(stopped, (0, -signal.SIGTERM))
        root, exec_root = self.daemon.root, self.daemon.exec_root
        content = [p for p in _walk(root) if any(_content_dir(a, root, exec_root) for a in (p, *p.parents))]
        content_before = _modes(iter(content))
        self.assertIn("bin/busybox", {str(Path(*p.parts[-2:])) for p in content})
        # What older versions left: directories, databases and locks
        # readable by all, logs by root's group (blobs and the shims' state
        # files were always private).
        for path in [root, exec_root, *_state(root, exec_root)]:
            if path.is_dir():
                os.chmod(path, 0o755)
            elif path.name.endswith("-json.log"):
                os.chmod(path, 0o640)
            elif path.name == "ross.lock" or ".db" in path.name:
                os.chmod(path, 0o644)
        yield deferToThread(self.daemon.start)
        modes = _modes(_state(root, exec_root))
        modes.pop(self.daemon.socket)
        modes.pop(str(exec_root / "docker.sock"))
        modes.pop(str(exec_root / "cri.sock"))
        modes.pop(str(exec_root / "direct.sock"))
        self.assertEqual({p: m for p, m in modes.items() if m & 0o077}, {})
        self.assertEqual(stat.S_IMODE(os.stat(root).st_mode), 0o700)
        self.assertEqual(stat.S_IMODE(os.stat(exec_root).st_mode), 0o700)
        self.assertEqual(_modes(iter(content)), content_before)
        probe = yield deferToThread(probe_as_nobody, [str(p) for p in _walk(root, exec_root)])
        self.assertEqual(probe.reached, {})
        logs = yield deferToThread(self.ross_ok, "logs", "done")
        self.assertEqual(logs.decode().strip(), self.secret)

    @inlineCallbacks
    def test_directories_not_ours_untouched(self) -> Any:
        """
        A socket in a directory others share (as /tmp) leaves its mode as
        it was, and a socket directory Ross makes is 0700; a --root whose
        parents are missing gets them 0755 and leaves the ones above alone;
        an existing --exec-root, Ross's own, is made private.
        """
        shared = short_tempdir()
        self.addCleanup(shutil.rmtree, shared, True)
        os.chmod(shared, 0o1777)
        self.daemon.root = self.base / "var" / "lib" / "ross"
        self.daemon.exec_root.mkdir(mode=0o755)
        os.chmod(self.daemon.exec_root, 0o755)
        self.daemon.extra = ["--listen", f"unix://{shared}/api.sock", "--listen", f"unix://{shared}/new/sub/api.sock"]
        yield deferToThread(self.daemon.start)
        self.assertEqual(stat.S_IMODE(os.stat(shared).st_mode), 0o1777)
        self.assertEqual([stat.S_IMODE(os.stat(shared / p).st_mode) for p in ("new", "new/sub")], [0o700, 0o700])
        for socket in (shared / "api.sock", shared / "new" / "sub" / "api.sock"):
            self.assertEqual(stat.S_IMODE(os.stat(socket).st_mode), 0o660)
            version = yield deferToThread(self.daemon.ross, "-H", f"unix://{socket}", "version")
            self.assertEqual(version.returncode, 0, version.stderr)
        self.assertEqual([stat.S_IMODE(os.stat(self.base / p).st_mode) for p in ("", "var", "var/lib", "var/lib/ross")],
                         [0o755, 0o755, 0o755, 0o700])
        self.assertEqual(stat.S_IMODE(os.stat(self.daemon.exec_root).st_mode), 0o700)

    @inlineCallbacks
    def test_shared_directory_refused(self) -> Any:
        """
        A --root or --exec-root that other users share (sticky, as /tmp)
        is refused, with the reason, and left as it was.
        """
        shared = short_tempdir()
        self.addCleanup(shutil.rmtree, shared, True)
        os.chmod(shared, 0o1777)
        for flag in ("--root", "--exec-root"):
            command = self.daemon.command() + [flag, str(shared)]
            result = yield deferToThread(subprocess.run, command, capture_output=True, timeout=30)
            self.assertNotEqual(result.returncode, 0)
            self.assertIn(f"{flag} {shared} is a directory other users share".encode(), result.stdout + result.stderr)
            self.assertEqual(stat.S_IMODE(os.stat(shared).st_mode), 0o1777)
            self.assertEqual(os.listdir(shared), [])
