"""
Small static C programs for tests that make raw system calls inside a
container, whatever libc (if any) its image has: C{compile_probe(name,
source)} builds one with ``gcc -static`` once per test run and returns the
binary's path (copy it into an image or root filesystem).
"""

from __future__ import annotations

import atexit
import hashlib
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

_lock = threading.Lock()
_built: dict[tuple[str, str], Path] = {}
_directory: list[Path] = []


def _workdir() -> Path:
    if not _directory:
        path = Path(tempfile.mkdtemp(prefix="ross-probes-"))
        atexit.register(shutil.rmtree, path, True)
        _directory.append(path)
    return _directory[0]


def compile_probe(name: str, c_source: str) -> Path:
    """
    The static binary of C{c_source}, named C{name}; compiled once per
    process for the same source.
    """
    key = (name, hashlib.sha256(c_source.encode()).hexdigest())
    with _lock:
        if key in _built:
            return _built[key]
        out = _workdir() / key[1][:16] / name
        out.parent.mkdir(exist_ok=True)
        source = out.parent / f"{name}.c"
        source.write_text(c_source)
        result = subprocess.run(["gcc", "-static", "-O2", "-Wall", "-o", str(out), str(source)],
                                capture_output=True, text=True, timeout=300)
        if result.returncode != 0:
            raise RuntimeError(f"gcc could not build probe {name}:\n{result.stderr}")
        _built[key] = out
        return out
