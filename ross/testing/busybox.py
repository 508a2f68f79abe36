"""
A busybox root filesystem built from the host's busybox-static: the test
image of every container test, made offline.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import BinaryIO

BUSYBOX = "/bin/busybox"

PASSWD = """root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
"""

GROUP = """root:x:0:
daemon:x:1:
tty:x:5:
www-data:x:33:
users:x:100:
nogroup:x:65534:
"""


def applets(busybox: str = BUSYBOX) -> list[str]:
    """
    The applets this busybox provides, as "bin/ls", "sbin/ifconfig"...
    """
    out = subprocess.run([busybox, "--list-full"], capture_output=True, text=True, check=True,
                         timeout=60).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


def build_rootfs(root: Path, busybox: str = BUSYBOX) -> Path:
    """
    Write a minimal busybox system into C{root}: /bin/busybox, a symlink per
    applet, /etc/passwd and /etc/group, and the usual empty directories.
    Everything is owned by root with ordinary modes.
    """
    if not os.path.exists(busybox):
        raise FileNotFoundError(f"{busybox} not found: install Debian's busybox-static")
    root.mkdir(parents=True, exist_ok=True)
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "root", "tmp", "var/www", "proc", "sys", "dev"):
        (root / d).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "tmp", 0o1777)
    os.chmod(root / "root", 0o700)
    shutil.copy2(busybox, root / "bin" / "busybox")
    os.chmod(root / "bin" / "busybox", 0o755)
    for applet in applets(busybox):
        link = root / applet
        if applet == "bin/busybox" or link.exists() or link.is_symlink():
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        depth = applet.count("/")
        os.symlink("../" * depth + "bin/busybox", link)
    (root / "etc" / "passwd").write_text(PASSWD)
    (root / "etc" / "group").write_text(GROUP)
    return root


def write_tar(root: Path, out: BinaryIO) -> None:
    """
    Write C{root} as an uncompressed tar (owned by root) to C{out}.
    """
    import tarfile

    def owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        return info

    with tarfile.open(fileobj=out, mode="w|") as tar:
        for entry in sorted(os.listdir(root)):
            tar.add(root / entry, arcname=entry, filter=owned)


def main() -> None:
    """
    ``python -m ross.testing.busybox | ross import - busybox``: a busybox root
    filesystem tarball on stdout, for a first image without a registry.
    """
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        write_tar(build_rootfs(Path(tmp) / "rootfs"), sys.stdout.buffer)


if __name__ == "__main__":
    main()
