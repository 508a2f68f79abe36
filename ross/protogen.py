# -*- test-case-name: ross.test.test_protogen -*-
"""
Generate the API modules from ``proto/``: ross.v1 (Ross's own API) and
ross.cri.v1 (the Kubernetes CRI, ``runtime.v1``, from kubernetes/cri-api's
api.proto, vendored unchanged with its licence).

``proto/`` is the one source of truth: the build (``setup.py build_py``) and
the set-up script run this; the generated files are not committed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

SOURCE = Path(__file__).resolve().parent.parent / "proto"

#: The packages generated, as directories under C{SOURCE} (and the output).
PACKAGES = (Path("ross") / "v1", Path("ross") / "cri" / "v1")


def proto_files(source: Path = SOURCE) -> list[Path]:
    """
    Every ``.proto`` file of the APIs, relative to C{source}, sorted.
    """
    return sorted(p.relative_to(source) for package in PACKAGES for p in (source / package).glob("*.proto"))


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
