"""
Small static C programs for tests that probe from inside a container
(busybox has neither a compiler nor Python): compiled once per source with
C{gcc -static} and bind-mounted into the container.

    probe = compile_probe("rawudp", SOURCE)
    ross("run", "--rm", "-v", f"{probe}:/probe:ro", "busybox", "/probe", ...)
"""

from __future__ import annotations

import atexit
import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

_built: dict[tuple[str, str], Path] = {}
_directory: Path | None = None


def _workdir() -> Path:
    global _directory
    if _directory is None:
        _directory = Path(tempfile.mkdtemp(prefix="ross-probes-"))
        atexit.register(shutil.rmtree, _directory, True)
    return _directory


def compile_probe(name: str, c_source: str) -> Path:
    """
    The path of C{c_source} compiled to a static executable called C{name}
    (blocking; cached for the life of the process, removed at its exit).
    """
    key = (name, hashlib.sha256(c_source.encode()).hexdigest())
    if key not in _built:
        directory = _workdir() / key[1][:16]
        directory.mkdir(exist_ok=True)
        source = directory / f"{name}.c"
        source.write_text(c_source)
        binary = directory / name
        result = subprocess.run(["gcc", "-static", "-O1", "-o", str(binary), str(source)],
                                capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"gcc failed on probe {name}:\n{result.stderr}")
        _built[key] = binary
    return _built[key]
