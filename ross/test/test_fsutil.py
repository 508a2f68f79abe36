"""
The modes of the daemon's own files and directories, whatever the umask.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from ross.engine.fsutil import (
    PRIVATE_FILE_MODE,
    STATE_DIR_MODE,
    make_dirs,
    private_database,
    private_dir,
    private_file,
)


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
