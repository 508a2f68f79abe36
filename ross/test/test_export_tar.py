"""
Tests for L{ross.engine.containers.export.write_tar}: the tar of a
container's merged layers while its files may change or go.
"""

from __future__ import annotations

import io
import os
import tarfile
from typing import Callable

from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.trial.unittest import SynchronousTestCase, TestCase

from ross.engine.containers import export
from ross.engine.containers.inspection import Inspection
from ross.engine.layers.beneath import Tree
from ross.engine.reactors import engine_reactor
from ross.engine.records import Mount
from ross.errors import NotFound


class WriteTarTests(SynchronousTestCase):
    def layer(self, files: dict[str, bytes]) -> str:
        root = self.mktemp()
        os.makedirs(root)
        for name, data in files.items():
            with open(os.path.join(root, name), "wb") as f:
                f.write(data)
        return root

    def test_file_gone_before_read(self) -> None:
        """
        A file deleted between the walk and its read (a running
        container's) is left out; the rest is written.
        """
        upper = self.layer({"kept": b"k", "going": b"g"})
        walked = export.merged

        def merged_then_delete(trees: list[Tree]) -> list[tuple[str, int]]:
            found = walked(trees)
            os.unlink(os.path.join(upper, "going"))
            return found

        self.patch(export, "merged", merged_then_delete)
        blocks: list[bytes] = []
        export.write_tar([upper], blocks.append)
        with tarfile.open(fileobj=io.BytesIO(b"".join(blocks))) as tar:
            self.assertEqual(tar.getnames(), ["kept"])

    def test_layer_gone(self) -> None:
        """
        A layer that is gone (the container removed during its export):
        NotFound, and no end of archive written, rather than a tar that
        would read as the container's whole root.
        """
        upper = self.layer({"a": b"a"})
        lower = os.path.join(self.mktemp(), "gone")
        blocks: list[bytes] = []
        error = self.assertRaises(NotFound, export.write_tar, [upper, lower], blocks.append)
        self.assertIn("removed during the export", str(error))
        self.assertEqual(blocks, [])

    def swap_after_walk(self, swap: Callable[[], None]) -> None:
        walked = export.merged

        def merged_then_swap(trees: list[Tree]) -> list[tuple[str, int]]:
            found = walked(trees)
            swap()
            return found

        self.patch(export, "merged", merged_then_swap)

    def host_secret(self) -> str:
        host = self.mktemp()
        os.makedirs(host)
        with open(os.path.join(host, "secret"), "wb") as f:
            f.write(b"HOST SECRET")
        return os.path.abspath(host)

    def test_directory_swapped_for_symlink(self) -> None:
        """
        A directory of a running container replaced by a symlink to the
        host between the walk and the read: the symlink is written as
        the container has it now, and nothing is read through it.
        """
        upper = self.layer({"kept": b"k"})
        os.mkdir(os.path.join(upper, "d"))
        with open(os.path.join(upper, "d", "secret"), "wb") as f:
            f.write(b"container's")
        host = self.host_secret()

        def swap() -> None:
            os.rename(os.path.join(upper, "d"), os.path.join(upper, "old"))
            os.symlink(host, os.path.join(upper, "d"))

        self.swap_after_walk(swap)
        blocks: list[bytes] = []
        export.write_tar([upper], blocks.append)
        self.assertNotIn(b"HOST SECRET", b"".join(blocks))
        with tarfile.open(fileobj=io.BytesIO(b"".join(blocks))) as tar:
            self.assertEqual(tar.getnames(), ["d", "kept"])
            self.assertTrue(tar.getmember("d").issym())
            self.assertEqual(tar.getmember("d").linkname, host)

    def test_file_swapped(self) -> None:
        """
        A file replaced by a symlink to a host file, or by a FIFO, after
        the walk: written as what it is now, never opened (a FIFO's open
        would block the export).
        """
        upper = self.layer({"link": b"one", "fifo": b"two"})
        host = self.host_secret()

        def swap() -> None:
            os.unlink(os.path.join(upper, "link"))
            os.symlink(os.path.join(host, "secret"), os.path.join(upper, "link"))
            os.unlink(os.path.join(upper, "fifo"))
            os.mkfifo(os.path.join(upper, "fifo"))

        self.swap_after_walk(swap)
        blocks: list[bytes] = []
        export.write_tar([upper], blocks.append)
        self.assertNotIn(b"HOST SECRET", b"".join(blocks))
        with tarfile.open(fileobj=io.BytesIO(b"".join(blocks))) as tar:
            self.assertTrue(tar.getmember("link").issym())
            self.assertTrue(tar.getmember("fifo").isfifo())

    def test_lower_symlink_not_followed(self) -> None:
        """
        A path of the upper layer whose parent is, in a lower layer (an
        image's), a symlink to the host: the lower's symlink is hidden by
        the upper's directory, as overlay hides it, and the host is not
        read.
        """
        host = self.host_secret()
        lower = self.layer({})
        os.symlink(host, os.path.join(lower, "d"))
        upper = self.layer({})
        os.mkdir(os.path.join(upper, "d"))
        blocks: list[bytes] = []
        export.write_tar([upper, lower], blocks.append)
        self.assertNotIn(b"HOST SECRET", b"".join(blocks))
        with tarfile.open(fileobj=io.BytesIO(b"".join(blocks))) as tar:
            self.assertEqual(tar.getnames(), ["d"])
            self.assertTrue(tar.getmember("d").isdir())

    def test_directory_gone_while_listed(self) -> None:
        """
        A directory deleted between its listing and the look at its
        opaque mark is left out, not an error of the whole export.
        """
        upper = self.layer({"kept": b"k"})
        os.mkdir(os.path.join(upper, "going"))
        looked = export.is_opaque  # type: ignore[attr-defined]

        def delete_then_look(path: str) -> bool:
            if os.path.basename(path) == "going":
                os.rmdir(os.path.join(upper, "going"))
            return looked(path)

        self.patch(export, "is_opaque", delete_then_look)
        blocks: list[bytes] = []
        export.write_tar([upper], blocks.append)
        with tarfile.open(fileobj=io.BytesIO(b"".join(blocks))) as tar:
            self.assertEqual(tar.getnames(), ["kept"])

    def test_file_shrinks_while_read(self) -> None:
        """
        A file that shrinks between its stat and its read is padded with
        zeros to the size its header gave, as GNU tar does: the tar stays
        whole and the entries after it are right.
        """
        upper = self.layer({"a": b"x" * 5000, "b": b"after"})
        real = Tree.open_file

        def truncate_then_open(tree: Tree, name: str, listed: os.stat_result) -> int | None:
            if name == "a":
                os.truncate(os.path.join(upper, "a"), 100)
            return real(tree, name, listed)

        self.patch(Tree, "open_file", truncate_then_open)
        blocks: list[bytes] = []
        export.write_tar([upper], blocks.append)
        with tarfile.open(fileobj=io.BytesIO(b"".join(blocks))) as tar:
            a = tar.extractfile("a")
            b = tar.extractfile("b")
            assert a is not None and b is not None
            self.assertEqual(a.read(), b"x" * 100 + bytes(4900))
            self.assertEqual(b.read(), b"after")


class ExportRemovedTests(TestCase):
    async def test_removed_during_export(self) -> None:
        """
        A container whose layers go during its export (removed meanwhile)
        fails the export as docker's would, naming it as the user did and
        not the daemon's paths.
        """
        upper = os.path.abspath(self.mktemp())
        os.makedirs(upper)
        gone = os.path.abspath(self.mktemp())

        class Snapshotter:
            def mounts(self, key: str) -> Deferred[list[Mount]]:
                return succeed([Mount("overlay", "overlay", "", (f"upperdir={upper}", f"lowerdir={gone}"))])

        flow = await Inspection(engine_reactor(reactor), Snapshotter()).export("key", "mine")  # type: ignore[arg-type]
        with self.assertRaises(NotFound) as caught:
            while await flow.get() is not None:
                pass
        self.assertEqual(str(caught.exception), "No such container: mine (removed during the export)")
