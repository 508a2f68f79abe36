"""
Small static C programs for tests that need a system call no busybox
applet makes (keyctl, bpf, ...): compiled with C{gcc -static}, so they run
in any container root, whatever libc the image has.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path


def compile_probe(name: str, c_source: str, cache_dir: Path) -> Path:
    """
    The static executable of C{c_source} in C{cache_dir} (a test's temp
    directory), compiled once per source. Raises CalledProcessError with
    gcc's messages when it does not compile.
    """
    digest = hashlib.sha256(c_source.encode()).hexdigest()[:16]
    binary = cache_dir / f"{name}-{digest}"
    if binary.exists():
        return binary
    cache_dir.mkdir(parents=True, exist_ok=True)
    source = cache_dir / f"{name}-{digest}.c"
    source.write_text(c_source)
    partial = binary.with_name(binary.name + ".partial")
    subprocess.run(["gcc", "-static", "-O1", "-o", str(partial), str(source)],
                   check=True, capture_output=True, text=True, timeout=120)
    os.replace(partial, binary)
    return binary
