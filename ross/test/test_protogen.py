"""
The generated ross.v1 modules are exactly what proto/ produces.
"""

from __future__ import annotations

import filecmp
import shutil
import tempfile
from pathlib import Path

from twisted.trial.unittest import TestCase

from ross import protogen


class GeneratedCodeTests(TestCase):
    def test_not_stale(self) -> None:
        """
        Regenerating from proto/ gives byte-identical files, and there is no
        generated file without a proto.
        """
        out = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, out)
        fresh = {p.relative_to(out) for p in protogen.generate(out)}
        top = Path(protogen.__file__).parent.parent
        installed = {p.relative_to(top) for package in protogen.PACKAGES for p in (top / package).glob("*_pb2*.py*")}
        self.assertEqual(installed, fresh, "run `python -m ross.protogen`: generated files differ from proto/")
        stale = [str(n) for n in sorted(fresh) if not filecmp.cmp(out / n, top / n, shallow=False)]
        self.assertEqual(stale, [], "run `python -m ross.protogen`: these generated files are stale")
        self.assertIn(Path("ross/cri/v1/api_pb2_grpc.py"), fresh)

    def test_every_rpc_documented(self) -> None:
        """
        Every rpc in the protos has a comment above it.
        """
        undocumented = []
        for path in protogen.proto_files():
            lines = (protogen.SOURCE / path).read_text().splitlines()
            for i, line in enumerate(lines):
                if line.strip().startswith("rpc ") and not lines[i - 1].strip().startswith("//"):
                    undocumented.append(f"{path}:{i + 1}: {line.strip()}")
        # Self-describing CRUD verbs may go without, the rest may not.
        allowed = ("rpc List", "rpc Stat", "rpc Inspect", "rpc Create", "rpc Remove", "rpc ImageHistory")
        self.assertEqual([u for u in undocumented if not any(a in u for a in allowed)], [])
