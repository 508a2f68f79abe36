"""
``ross cp``'s path rules, as docker's pkg/archive copy.go decides them.
"""

from __future__ import annotations

import os
import tarfile

from twisted.trial.unittest import SynchronousTestCase

from ross.cli import cp
from ross.client.base import CliError
from ross.engine.fsutil import remove_tree
from ross.humanize import human_size
from ross.tarwrite import FdSink, walk, write_tree
from ross.testing.hostile import deep_directories


class PathRuleTests(SynchronousTestCase):
    def test_split_arg(self) -> None:
        """CONTAINER:PATH, except absolute paths and ./relative ones with a colon."""
        self.assertEqual(
            [cp.split_arg(a) for a in ("web1:/tmp", "/a:b", "./x:y", "file", "c:", "c:rel/x")],
            [("web1", "/tmp"), ("", "/a:b"), ("", "./x:y"), ("", "file"), ("c", ""), ("c", "rel/x")])

    def test_split_entry(self) -> None:
        """The last entry of a path; "." for one ending in /."""
        self.assertEqual(
            [cp.split_entry(p) for p in ("/etc/passwd", "/etc/", "/etc/.", "/", "rel/x")],
            [("/etc", "passwd"), ("/", "etc"), ("/etc", "."), ("/", "/"), ("rel", "x")])

    def test_local_path_keeps_trailing(self) -> None:
        self.assertEqual(cp.local_path("/a/b/../c/"), "/a/c/")
        self.assertEqual(cp.local_path("/a/b/."), "/a/b/.")

    def test_prepare(self) -> None:
        """Where to extract, and the name the top entry takes there."""
        file, directory = cp.CopyInfo("/src/f", True, False), cp.CopyInfo("/src/d", True, True)
        self.assertEqual(cp.prepare(file, cp.CopyInfo("/dst", True, True)), ("/dst", ""))
        self.assertEqual(cp.prepare(file, cp.CopyInfo("/dst/g", True, False)), ("/dst", "g"))
        self.assertEqual(cp.prepare(file, cp.CopyInfo("/dst/new")), ("/dst", "new"))
        self.assertEqual(cp.prepare(directory, cp.CopyInfo("/dst/new/")), ("/dst", "new"))
        self.assertEqual(self.assertRaises(CliError, cp.prepare, directory, cp.CopyInfo("/dst/g", True, False)).message,
                         "cannot copy directory")
        error = self.assertRaises(CliError, cp.prepare, file, cp.CopyInfo("/dst/new/"))
        self.assertEqual((error.message, error.code), ("no such directory", 1))

    def test_rebase(self) -> None:
        """Only the first component is renamed."""
        self.assertEqual([cp.rebase(n, "d", "x") for n in ("d", "d/a", "dd/a", "a/d")], ["x", "x/a", "dd/a", "a/d"])
        self.assertEqual(cp.rebase("./a", ".", "new"), "new/a")

    def test_copied_size(self) -> None:
        """cp's sizes have three significant digits, other listings four."""
        lines: list[str] = []
        cp.copied(2048, "web1:/tmp/", lines.append)
        self.assertEqual(lines, ["Successfully copied 2.05kB to web1:/tmp/\n"])
        self.assertEqual(human_size(2048), "2.048kB")


class WalkTests(SynchronousTestCase):
    def test_deeper_than_the_recursion_limit(self) -> None:
        """
        A tree deeper than Python's recursion limit (a container's: cp
        reads it in the container) is walked and archived whole, in
        order; a pruned directory is listed, not entered.
        """
        top = os.path.abspath(self.mktemp())
        os.mkdir(top)
        self.addCleanup(remove_tree, top)
        os.close(deep_directories(top, 1500, "d", each="f"))
        names = [name for _, name, _ in walk(top, "t")]
        self.assertEqual(names[:5], ["t", "t/d", "t/d/d", "t/d/d/d", "t/d/d/d/d"])
        self.assertEqual(len(names), 1 + 1500 * 2)
        self.assertEqual(names[-1], "t/f")
        pruned = [name for _, name, _ in walk(top, "t", lambda path, st: path.endswith("/d/d"))]
        self.assertEqual(pruned, ["t", "t/d", "t/d/d", "t/d/f", "t/f"])
        archive = self.mktemp()
        out = os.open(archive, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            sink = FdSink(out)
            write_tree(top, "t", sink)
            sink.flush()
        finally:
            os.close(out)
        with tarfile.open(archive) as tar:
            self.assertEqual(len(tar.getnames()), 1 + 1500 * 2)
