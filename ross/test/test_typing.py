# -*- test-case-name: ross.test.test_typing -*-
"""
Ross type-checks as pyproject.toml's [tool.mypy] says (STYLE: type
everything; mypy with mypy_zope, strict for ross.engine), and that
configuration keeps its tiers apart.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

import ross

REPO = Path(ross.__file__).resolve().parent.parent
CONFIG = REPO / "pyproject.toml"

# Typed code calling an untyped function: every tier reports the untyped
# def and the Any it returns; only the strict tier reports the call.
_PROBE = '''\
def untyped(x):
    return x


def typed() -> int:
    return untyped(1)
'''


def _mypy(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mypy", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=900)


class TypingTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.assertTrue(CONFIG.is_file(), f"{CONFIG} is missing: these tests need a source checkout")

    def test_mypy_passes(self) -> None:
        """
        C{mypy ross}, run from the repository root as a developer runs it,
        finds no error in any module.
        """
        result = _mypy("ross", cwd=REPO)
        output = result.stdout + result.stderr
        self.assertEqual(result.returncode, 0, f"`mypy ross` failed:\n{output}")
        checked = re.findall(r"^Success: no issues found in (\d+) source files$", result.stdout, re.M)
        self.assertEqual(len(checked), 1, output)
        # Guards against an exclude pattern that silently drops the package.
        self.assertGreater(int(checked[0]), 100, output)

    def test_tiers(self) -> None:
        """
        ross.engine and ross.protocols are strict (they reject calls to
        untyped functions); the rest of Ross is not, though it still requires
        annotations; generated ross.v1 code is not checked even when imported.
        A C{strict = true} inside an override would fail this: mypy applies it
        to every module.
        """
        root = Path(self.mktemp()).absolute()
        sources = {
            "ross.engine.probe": _PROBE,
            "ross.protocols.probe": _PROBE,
            "ross.cli.probe": _PROBE,
            "ross.test.probe": _PROBE,
            "ross.v1.probe": _PROBE,
            "ross.cli.uses_v1": "import ross.v1.probe\n",
        }
        for module, source in sources.items():
            path = root.joinpath(*module.split(".")).with_suffix(".py")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(source)
            for package in path.parents:
                if package == root:
                    break
                (package / "__init__.py").touch()
        result = _mypy("--config-file", str(CONFIG), "--cache-dir", str(root / "cache"), "ross", cwd=root)
        output = result.stdout + result.stderr
        codes: dict[str, set[str]] = {module: set() for module in sources}
        for path, code in re.findall(r"^(\S+\.py):\d+: error: .*\[([a-z-]+)\]$", result.stdout, re.M):
            codes[path.removesuffix(".py").replace("/", ".")].add(code)
        basic = {"no-untyped-def", "no-any-return"}
        self.assertEqual(codes, {
            "ross.engine.probe": basic | {"no-untyped-call"},
            "ross.protocols.probe": basic | {"no-untyped-call"},
            "ross.cli.probe": basic,
            # Tests may return Any (trial's helpers are unannotated).
            "ross.test.probe": {"no-untyped-def"},
            "ross.v1.probe": set(),
            "ross.cli.uses_v1": set(),
        }, output)
