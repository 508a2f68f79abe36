# -*- test-case-name: ross.test.integration.test_state_privacy -*-
"""
What another user of the host reaches: a probe run as C{nobody} tries every
path it is given (list a directory, read a file, connect to a socket) and
reads every process's command line and environment looking for markers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Iterable

import attrs

#: The unprivileged user and group the probe runs as.
NOBODY = 65534

# Runs as nobody with the stdlib only (-I -S): the repository and the
# virtualenv need not be reachable by that user.
_PROBE = r"""
import json, os, socket, stat, sys

job = json.load(sys.stdin)
reached = {}
for path in job["paths"]:
    try:
        st = os.lstat(path)
    except OSError:
        continue
    how = "stat"
    try:
        if stat.S_ISDIR(st.st_mode):
            os.listdir(path)
            how = "list"
        elif stat.S_ISREG(st.st_mode):
            with open(path, "rb") as f:
                f.read(1)
            how = "read"
        elif stat.S_ISSOCK(st.st_mode):
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(path)
            how = "connect"
    except OSError:
        pass
    reached[path] = how
found = {}
for pid in os.listdir("/proc"):
    if not pid.isdigit() or int(pid) == os.getpid():
        continue
    for name in ("cmdline", "environ"):
        try:
            with open(f"/proc/{pid}/{name}", "rb") as f:
                data = f.read()
        except OSError:
            continue
        for marker in job["markers"]:
            if marker.encode() in data:
                found.setdefault(marker, []).append(f"/proc/{pid}/{name}")
json.dump({"reached": reached, "found": found}, sys.stdout)
"""


@attrs.frozen
class Probe:
    """
    What nobody reached.

    @ivar reached: each path it could do anything with, and the most it
        could do: "stat" (its parents let it through), "list", "read",
        "connect".
    @ivar found: each marker seen, and the /proc files it was seen in.
    """

    reached: dict[str, str]
    found: dict[str, list[str]]


def probe_as_nobody(paths: Iterable[str], markers: Iterable[str] = (), timeout: float = 60.0) -> Probe:
    """
    Try C{paths} and scan every process for C{markers} as nobody
    (blocking; the caller must be root).
    """
    job = json.dumps({"paths": list(paths), "markers": list(markers)})
    result = subprocess.run(
        [os.path.realpath(sys.executable), "-I", "-S", "-c", _PROBE],
        input=job.encode(), capture_output=True, timeout=timeout, cwd="/", env={},
        user=NOBODY, group=NOBODY, extra_groups=[],
    )
    if result.returncode != 0:
        raise RuntimeError(f"the probe failed ({result.returncode}): {result.stderr.decode(errors='replace')}")
    answer = json.loads(result.stdout)
    return Probe(reached=answer["reached"], found=answer["found"])
