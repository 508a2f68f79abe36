# -*- test-case-name: ross.test.test_protogen -*-
"""
Generate the ross.v1 and CRI (ross.cri.v1) Python modules from ``proto/``.

``proto/`` is the one source of truth: the build (``setup.py build_py``) and
the set-up script run this; the generated files are not committed. The CRI's
api.proto is Kubernetes' own, unchanged (its wire package stays runtime.v1);
it lives under ross/cri/v1 only so its modules are importable as
``ross.cri.v1``.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

SOURCE = Path(__file__).resolve().parent.parent / "proto"

#: The generated packages, as directories under proto/ and the output.
PACKAGES = (Path("ross") / "v1", Path("ross") / "cri" / "v1")


def proto_files(source: Path = SOURCE) -> list[Path]:
    """
    Every ``.proto`` file of the API, relative to C{source}, sorted.
    """
    return sorted(p.relative_to(source) for package in PACKAGES for p in (source / package).glob("*.proto"))


def generate(out: Path, source: Path = SOURCE) -> list[Path]:
    """
    Run protoc (from grpcio-tools) over C{source}, writing the packages under
    C{out}. Returns the generated files. A file whose content is unchanged
    is left as it is, its modification time with it: Python's cached
    bytecode of it stays valid (where PYTHONDONTWRITEBYTECODE is set, every
    start would compile a rewritten module again).
    """
    from grpc_tools import protoc
    import grpc_tools

    include = Path(grpc_tools.__file__).resolve().parent / "_proto"
    out.mkdir(parents=True, exist_ok=True)
    files = [str(p) for p in proto_files(source)]
    with tempfile.TemporaryDirectory(dir=out, prefix=".protogen-") as scratch:
        args = [
            "grpc_tools.protoc",
            f"-I{source}",
            f"-I{include}",
            f"--python_out={scratch}",
            f"--pyi_out={scratch}",
            f"--grpc_python_out={scratch}",
            *files,
        ]
        code = protoc.main(args)
        if code != 0:
            raise RuntimeError(f"protoc failed with status {code}")
        for made in sorted(p for package in PACKAGES for p in (Path(scratch) / package).glob("*_pb2*.py*")):
            target = out / made.relative_to(scratch)
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists() or target.read_bytes() != made.read_bytes():
                os.replace(made, target)
    return sorted(p for package in PACKAGES for p in (out / package).glob("*_pb2*.py*"))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[0]) if argv else SOURCE.parent
    written = generate(out)
    places = ", ".join(os.fspath(out / package) for package in PACKAGES)
    sys.stdout.write(f"generated {len(written)} files under {places}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
