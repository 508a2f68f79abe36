# -*- test-case-name: ross.test.test_protogen -*-
"""
Generate the ross.v1 Python modules from ``proto/``.

``proto/`` is the one source of truth: the build (``setup.py build_py``) and
the set-up script run this; the generated files are not committed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

SOURCE = Path(__file__).resolve().parent.parent / "proto"


def proto_files(source: Path = SOURCE) -> list[Path]:
    """
    Every ``.proto`` file of the API, relative to C{source}, sorted.
    """
    return sorted(p.relative_to(source) for p in (source / "ross" / "v1").glob("*.proto"))


def generate(out: Path, source: Path = SOURCE) -> list[Path]:
    """
    Run protoc (from grpcio-tools) over C{source}, writing the packages under
    C{out}. Returns the files written.
    """
    from grpc_tools import protoc
    import grpc_tools

    include = Path(grpc_tools.__file__).resolve().parent / "_proto"
    out.mkdir(parents=True, exist_ok=True)
    files = [str(p) for p in proto_files(source)]
    args = [
        "grpc_tools.protoc",
        f"-I{source}",
        f"-I{include}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *files,
    ]
    code = protoc.main(args)
    if code != 0:
        raise RuntimeError(f"protoc failed with status {code}")
    generated = sorted((out / "ross" / "v1").glob("*_pb2*.py*"))
    return generated


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[0]) if argv else SOURCE.parent
    written = generate(out)
    sys.stdout.write(f"generated {len(written)} files under {os.fspath(out / 'ross' / 'v1')}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
