"""
Tests for L{ross.engine.containers.export.write_tar}: the tar of a
container's merged layers while its files may change or go.
"""

from __future__ import annotations

import io
import os
import tarfile

from twisted.trial.unittest import SynchronousTestCase

from ross.engine.containers import export
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

        def merged_then_delete(layers: list[str]) -> list[tuple[str, str]]:
            found = walked(layers)
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
