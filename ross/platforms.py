"""
Platform names as OCI and docker write them, shared by the clients (`ross
version`) and the engine (manifest lists, `ross info`).
"""

from __future__ import annotations

import os


# uname's machine names -> OCI (GOARCH) architectures.
GO_ARCH = {
    "x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "armv6l": "arm", "i686": "386",
    "i386": "386", "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64",
}


def go_arch(machine: str | None = None) -> str:
    """
    The OCI (GOARCH) name of this machine's architecture.
    """
    machine = machine or os.uname().machine  # platform.machine(), without platform's import
    return GO_ARCH.get(machine, machine)
