"""
The modes of the daemon's own files and directories, whatever the umask.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sqlite3
import stat
from pathlib import Path

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from ross.engine.fsutil import (
    PRIVATE_FILE_MODE,
    STATE_DIR_MODE,
    make_dirs,
    prepare_socket_path,
    private_database,
    private_dir,
    private_file,
    remove_tree,
)
from ross.testing.daemon import short_tempdir
from ross.testing.hostile import deep_directories
from ross.testing.leaks import fds_under


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


class ModeTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.base = Path(self.mktemp()).absolute()
        self.base.mkdir(parents=True)
        os.chmod(self.base, 0o751)

    def under_umask(self, umask: int) -> None:
        old = os.umask(umask)
        self.addCleanup(os.umask, old)

    def test_make_dirs_exact_modes(self) -> None:
        """
        Every directory made gets exactly the mode asked for, under a umask
        that would narrow it (the daemon's) or widen it (none); the ones
        that exist keep theirs.
        """
        for umask, wanted in ((0o077, 0o755), (0, 0o700)):
            self.under_umask(umask)
            top = self.base / f"u{umask:o}"
            make_dirs(top / "a" / "b", wanted)
            self.assertEqual([mode(top), mode(top / "a"), mode(top / "a" / "b")], [wanted] * 3)
        make_dirs(self.base / "u77" / "a", 0o700)
        self.assertEqual(mode(self.base / "u77" / "a"), 0o755)
        self.assertEqual(mode(self.base), 0o751)

    def test_make_dirs_refuses_a_file(self) -> None:
        """
        A file where a directory should be is an error, not replaced.
        """
        (self.base / "f").write_text("")
        self.assertRaises(OSError, make_dirs, self.base / "f" / "d", 0o755)
        self.assertTrue((self.base / "f").is_file())

    def test_private_dir(self) -> None:
        """
        A new private directory is STATE_DIR_MODE with its missing parents
        0755; one left looser is fixed; the parents that existed keep their
        modes.
        """
        self.under_umask(0)
        new = self.base / "var" / "lib" / "ross"
        private_dir(new)
        self.assertEqual((mode(new), mode(new.parent), mode(new.parent.parent)), (STATE_DIR_MODE, 0o755, 0o755))
        os.chmod(new, 0o755)
        os.chmod(new.parent, 0o777)
        private_dir(new)
        self.assertEqual((mode(new), mode(new.parent), mode(self.base)), (STATE_DIR_MODE, 0o777, 0o751))

    def test_private_file(self) -> None:
        """
        A private file is made empty, or fixed and kept as it was.
        """
        self.under_umask(0)
        path = self.base / "state"
        private_file(path)
        self.assertEqual((mode(path), path.read_bytes()), (PRIVATE_FILE_MODE, b""))
        path.write_bytes(b"kept")
        os.chmod(path, 0o644)
        private_file(path)
        self.assertEqual((mode(path), path.read_bytes()), (PRIVATE_FILE_MODE, b"kept"))

    def test_private_database(self) -> None:
        """
        A database made private before SQLite opens it keeps its -wal and
        -shm files private too, under no umask at all; the ones an older
        version left readable are fixed.
        """
        self.under_umask(0)
        path = self.base / "meta.db"
        private_database(path)
        db = sqlite3.connect(path, isolation_level=None)
        self.addCleanup(db.close)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE t (x)")
        db.execute("INSERT INTO t VALUES (1)")
        names = sorted(p.name for p in self.base.iterdir())
        self.assertEqual(names, ["meta.db", "meta.db-shm", "meta.db-wal"])
        self.assertEqual({n: mode(self.base / n) for n in names}, dict.fromkeys(names, PRIVATE_FILE_MODE))
        for name in names:
            os.chmod(self.base / name, 0o644)
        private_database(path)
        self.assertEqual({n: mode(self.base / n) for n in names}, dict.fromkeys(names, PRIVATE_FILE_MODE))


class SocketPathTests(SynchronousTestCase):
    """
    L{prepare_socket_path} removes what a dead daemon left and takes over
    nothing that is alive or not a socket.
    """

    def setUp(self) -> None:
        self.base = Path(short_tempdir("ross-sock-"))
        self.addCleanup(shutil.rmtree, self.base, True)
        self.path = str(self.base / "run" / "api.sock")

    def listen(self) -> socket.socket:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(server.close)
        server.bind(self.path)
        server.listen(1)
        return server

    def test_missing_directory_made_private(self) -> None:
        prepare_socket_path(self.path)
        self.assertEqual(mode(self.base / "run"), 0o700)
        self.assertFalse(os.path.exists(self.path))

    def test_stale_socket_removed(self) -> None:
        self.listen().close()
        prepare_socket_path(self.path)
        self.assertFalse(os.path.exists(self.path))

    def test_live_socket_refused(self) -> None:
        self.listen()
        error = self.assertRaises(FileExistsError, prepare_socket_path, self.path)
        self.assertIn("in use", str(error))
        self.assertTrue(stat.S_ISSOCK(os.lstat(self.path).st_mode))

    def test_other_file_refused(self) -> None:
        os.makedirs(os.path.dirname(self.path))
        Path(self.path).write_text("mine")
        error = self.assertRaises(FileExistsError, prepare_socket_path, self.path)
        self.assertIn("not a socket", str(error))
        self.assertEqual(Path(self.path).read_text(), "mine")


class RemoveTreeTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.base = Path(self.mktemp()).absolute()
        self.base.mkdir(parents=True)

    def test_deeper_than_the_recursion_limit(self) -> None:
        """
        A tree deeper than Python's recursion limit (shutil.rmtree's: a
        RecursionError) is removed whole, with files at every level.
        """
        top = self.base / "top"
        top.mkdir()
        os.close(deep_directories(top, 3000, each="f"))
        remove_tree(top)
        self.assertFalse(os.path.lexists(top))
        self.assertEqual(fds_under(top), [])

    def test_follows_no_symlink(self) -> None:
        """
        Symlinks in the tree, and a symlink given as the tree, are removed
        themselves: what they point at stays.
        """
        outside = self.base / "outside"
        outside.mkdir()
        (outside / "keep").write_text("kept")
        top = self.base / "top"
        (top / "sub").mkdir(parents=True)
        (top / "sub" / "link").symlink_to(outside)
        (top / "dirlink").symlink_to(outside)
        remove_tree(top)
        self.assertFalse(os.path.lexists(top))
        link = self.base / "link"
        link.symlink_to(outside)
        remove_tree(link)
        self.assertFalse(os.path.lexists(link))
        self.assertEqual((outside / "keep").read_text(), "kept")

    def test_missing_and_errors(self) -> None:
        """
        A missing path is removed already; an error is raised, or with
        C{ignore_errors} what can be removed is.
        """
        remove_tree(self.base / "missing")
        top = self.base / "top"
        (top / "a").mkdir(parents=True)
        (top / "a" / "f").write_text("")
        (top / "b").write_text("")
        # A directory that is a mount point cannot be removed (EBUSY).
        busy = self.base / "busy"
        (busy / "mnt").mkdir(parents=True)
        if os.geteuid() != 0:
            raise SkipTest("mounting needs root")
        subprocess.run(["mount", "-t", "tmpfs", "none", str(busy / "mnt")], check=True, timeout=30)
        self.addCleanup(subprocess.run, ["umount", str(busy / "mnt")], timeout=30)
        with self.assertRaises(OSError):
            remove_tree(busy)
        remove_tree(busy, ignore_errors=True)
        self.assertEqual(os.listdir(busy), ["mnt"])
        remove_tree(top, ignore_errors=True)
        self.assertFalse(os.path.lexists(top))
