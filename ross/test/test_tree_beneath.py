"""
Tests for L{ross.engine.layers.beneath}: reading a running container's
upper directory (diff, export, commit) without following what its
processes swap in meanwhile.
"""

from __future__ import annotations

import io
import os
import tarfile

from twisted.trial.unittest import SynchronousTestCase

from ross.engine.containers.changes import changes, runtime_only_dirs
from ross.engine.fsutil import disk_usage, remove_tree
from ross.engine.layers import write_diff
from ross.engine.layers.beneath import PIECE, Tree, _pieces
from ross.testing.hostile import deep_directories
from ross.testing.leaks import fds_under


class _Fixture(SynchronousTestCase):
    def directory(self) -> str:
        path = os.path.abspath(self.mktemp())
        os.makedirs(path)
        return path

    def write(self, path: str, data: bytes) -> None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)

    def host_secret(self) -> str:
        """A directory outside every tree, holding C{secret}."""
        host = self.directory()
        self.write(os.path.join(host, "secret"), b"HOST SECRET")
        return host

    def tree(self, root: str) -> Tree:
        tree = Tree(root)
        self.addCleanup(tree.close)
        return tree


class TreeTests(_Fixture):
    def test_walk_order(self) -> None:
        """
        A directory comes before what it holds, siblings in byte order;
        an entry C{skip} refuses is not descended into.
        """
        root = self.directory()
        for name in ("b/x", "a.txt", "a/y", "a/z/w", "c"):
            self.write(os.path.join(root, name), b"")
        walked = [entry.name for entry in self.tree(root).walk()]
        self.assertEqual(walked, ["a", "a/y", "a/z", "a/z/w", "a.txt", "b", "b/x", "c"])
        skipped = [entry.name for entry in self.tree(root).walk(lambda name: name == "a/z")]
        self.assertEqual(skipped, ["a", "a/y", "a.txt", "b", "b/x", "c"])

    def test_deep_tree(self) -> None:
        """
        A tree deeper than Python's recursion limit (a container can make
        one) is walked whole; its fds are closed once the walk is done or
        abandoned.
        """
        root = self.directory()
        os.close(deep_directories(root, 1500, "d"))
        self.addCleanup(remove_tree, root)
        tree = self.tree(root)
        walked = [entry.name for entry in tree.walk()]
        self.assertEqual(len(walked), 1500)
        self.assertEqual(walked[-1], "/".join(["d"] * 1500))
        abandoned = tree.walk()
        for _ in range(700):
            next(abandoned)
        abandoned.close()
        self.assertEqual(fds_under(root), [root])  # the tree's own

    def test_paths_longer_than_path_max(self) -> None:
        """
        Entries whose paths are longer than one openat2 takes (a container
        can make them) are read, a piece at a time; a symlink swapped in
        on the way still ends the lookup.
        """
        root = self.directory()
        fd = deep_directories(root, 300, "d0123456789012345")
        with open(f"/proc/self/fd/{fd}/f", "wb") as f:
            f.write(b"far")
        os.symlink("target", "l", dir_fd=fd)
        os.close(fd)
        self.addCleanup(remove_tree, root)
        chain = "/".join(["d0123456789012345"] * 300)
        self.assertGreater(len(chain), 4096)
        self.assertEqual(len(_pieces(chain + "/f")), 3)
        tree = self.tree(root)
        listed = {entry.name: entry.stat for entry in tree.walk()}
        opened = tree.open_file(chain + "/f", listed[chain + "/f"])
        assert opened is not None
        self.addCleanup(os.close, opened)
        self.assertEqual(os.read(opened, 10), b"far")
        self.assertEqual(tree.readlink(chain + "/l"), "target")
        self.assertEqual(sorted(tree.listdir(chain) or []), ["f", "l"])
        self.assertTrue(tree.exists(chain + "/f"))
        # A directory half-way made a symlink to where the rest still is.
        middle = os.path.join(root, *(["d0123456789012345"] * 200))
        os.rename(middle, middle + ".real")
        os.symlink(os.path.basename(middle) + ".real", middle)
        self.assertFalse(tree.exists(chain + "/f"))
        self.assertIsNone(tree.lstat(chain + "/f"))

    def test_pieces(self) -> None:
        self.assertEqual(_pieces("a/b"), ["a/b"])
        name = "/".join(["x" * 200] * 30)
        pieces = _pieces(name)
        self.assertEqual("/".join(pieces), name)
        self.assertTrue(all(len(p) <= PIECE for p in pieces))
        with self.assertRaises(OSError):
            _pieces("y" * (PIECE + 1))

    def test_nothing_through_symlinks(self) -> None:
        """
        A path through a symlink of the tree, even one pointing inside it,
        is not there: lstat, readlink and open_file give None, exists
        False. The symlink itself is read as a symlink.
        """
        root = self.directory()
        host = self.host_secret()
        os.symlink(host, os.path.join(root, "out"))
        os.mkdir(os.path.join(root, "in"))
        self.write(os.path.join(root, "in", "secret"), b"mine")
        os.symlink("in", os.path.join(root, "inside"))
        tree = self.tree(root)
        listed = os.stat(os.path.join(host, "secret"))
        for path in ("out/secret", "inside/secret", "../" + os.path.basename(host) + "/secret"):
            self.assertIsNone(tree.lstat(path))
            self.assertFalse(tree.exists(path))
            self.assertIsNone(tree.open_file(path, listed))
        self.assertEqual(tree.readlink("out"), host)
        self.assertIsNone(tree.readlink("in"))
        self.assertTrue(tree.exists("in/secret"))

    def test_open_file_checks_what_was_listed(self) -> None:
        """
        open_file reads only the regular file that was listed: once it
        is replaced by another file or by a FIFO (whose open would
        block), it gives None.
        """
        root = self.directory()
        path = os.path.join(root, "f")
        self.write(path, b"listed")
        tree = self.tree(root)
        listed = os.lstat(path)
        fd = tree.open_file("f", listed)
        assert fd is not None
        with open(fd, "rb") as f:
            self.assertEqual(f.read(), b"listed")
        self.write(path + ".new", b"another")
        os.rename(path + ".new", path)
        self.assertIsNone(tree.open_file("f", listed))
        os.unlink(path)
        os.mkfifo(path)
        self.assertIsNone(tree.open_file("f", listed))

    def test_walk_does_not_descend_swapped_directory(self) -> None:
        """
        A directory listed as one and replaced by a symlink to the host
        before the walk descends into it: nothing below it is given.
        """
        root = self.directory()
        host = self.host_secret()
        self.write(os.path.join(root, "d", "mine"), b"")
        walked = []
        for entry in self.tree(root).walk():
            walked.append(entry.name)
            if entry.name == "d":
                os.rename(os.path.join(root, "d"), os.path.join(root, "old"))
                os.symlink(host, os.path.join(root, "d"))
        self.assertEqual(walked, ["d"])


class DiffTests(_Fixture):
    def test_directory_swapped_during_commit(self) -> None:
        """
        A running container swaps a directory for a symlink to the host
        while its layer is written (commit without pausing it, at the
        moment the directory's header is out): nothing of the host is in
        the layer.
        """
        upper = self.directory()
        host = self.host_secret()
        # The file's header and content end 512 bytes short of the
        # diff's 1 MiB chunk, so the directory's header completes the
        # chunk and the tap sees it before the walk goes into it.
        self.write(os.path.join(upper, "a"), b"\0" * ((1 << 20) - 1024))
        self.write(os.path.join(upper, "b", "secret"), b"mine")
        swapped: list[int] = []

        class Swap:
            def write(self, data: bytes) -> None:
                if not swapped:
                    swapped.append(len(data))
                    os.rename(os.path.join(upper, "b"), os.path.join(upper, "old"))
                    os.symlink(host, os.path.join(upper, "b"))

        out = io.BytesIO()
        write_diff(upper, out, "none", tap=Swap())
        self.assertEqual(swapped, [1 << 20])
        self.assertNotIn(b"HOST SECRET", out.getvalue())
        with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tar:
            self.assertEqual(tar.getnames(), ["a", "b"])


class ChangesTests(_Fixture):
    def test_lower_symlink_not_followed(self) -> None:
        """
        An image layer's symlink to a host directory, hidden by a
        directory of the container's: what the container put in it is
        added, whatever the host's directory holds (before, the host was
        looked at through the image's symlink and the file was "C").
        """
        host = self.host_secret()
        lower = self.directory()
        os.symlink(host, os.path.join(lower, "d"))
        self.write(os.path.join(lower, "kept"), b"")
        upper = self.directory()
        self.write(os.path.join(upper, "d", "secret"), b"mine")
        self.write(os.path.join(upper, "kept"), b"changed")
        self.assertEqual(changes(upper, [lower]), [("C", "/d"), ("A", "/d/secret"), ("C", "/kept")])

    def test_runtime_files(self) -> None:
        """
        The runtime's files, and a directory there only to hold them,
        are not changes; a directory that holds more is.
        """
        upper = self.directory()
        self.write(os.path.join(upper, "etc", "hosts"), b"")
        self.write(os.path.join(upper, "etc", "resolv.conf"), b"")
        self.assertEqual(changes(upper, []), [])
        self.write(os.path.join(upper, "etc", "motd"), b"")
        self.assertEqual(changes(upper, []), [("A", "/etc"), ("A", "/etc/motd")])


    def test_runtime_only_dirs(self) -> None:
        """
        /etc holding only the runtime's files is there for them; an empty
        /etc (its mode changed) or a symlink to the host's is the
        container's change, and the host's directory is not listed.
        """
        upper = self.directory()
        self.write(os.path.join(upper, "etc", "hostname"), b"")
        self.assertEqual(runtime_only_dirs(self.tree(upper)), ["etc"])
        os.unlink(os.path.join(upper, "etc", "hostname"))
        self.assertEqual(runtime_only_dirs(self.tree(upper)), [])
        os.rmdir(os.path.join(upper, "etc"))
        host = self.directory()
        self.write(os.path.join(host, "hosts"), b"")
        os.symlink(host, os.path.join(upper, "etc"))
        self.assertEqual(runtime_only_dirs(self.tree(upper)), [])
        self.assertEqual(changes(upper, []), [("A", "/etc")])

class DiskUsageTests(_Fixture):
    def test_counts_each_inode_once_and_follows_nothing(self) -> None:
        """
        disk_usage counts a hard-linked file once and a symlink as itself,
        not what it points at (a container's symlink to the host's /).
        """
        root = self.directory()
        self.write(os.path.join(root, "d", "f"), b"x" * 100_000)
        os.link(os.path.join(root, "d", "f"), os.path.join(root, "g"))
        os.symlink("/", os.path.join(root, "host"))
        usage = disk_usage(root)
        self.assertEqual(usage.inodes, 4)  # root, d, f (twice), host
        self.assertGreaterEqual(usage.size, 100_000)
        self.assertLess(usage.size, 1 << 20)
