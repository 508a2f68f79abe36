"""
Tests for L{ross.engine.hostinfo}.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from ross import platforms
from ross.engine import hostinfo

HYBRID = """\
35 25 0:30 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
36 35 0:31 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
37 35 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
38 35 0:33 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
39 35 0:34 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
"""


class CgroupTests(SynchronousTestCase):
    def test_v1_controllers(self) -> None:
        """
        Each v1 controller is found on its hierarchy, several per mount too.
        """
        found = hostinfo.cgroup_controllers(HYBRID)
        self.assertEqual({k: v for k, v in found.items() if v == "v1"},
                         {"memory": "v1", "cpu": "v1", "cpuacct": "v1", "pids": "v1"})

    def test_modes(self) -> None:
        self.assertEqual(hostinfo.cgroup_mode({"memory": "v1", "hugetlb": "v2"}), "hybrid")
        self.assertEqual(hostinfo.cgroup_mode({"memory": "v2"}), "v2")
        self.assertEqual(hostinfo.cgroup_mode({"memory": "v1"}), "v1")
        self.assertEqual(hostinfo.cgroup_mode({}), "none")

    def test_this_host(self) -> None:
        """
        This machine's memory controller is found, on v1 or v2.
        """
        found = hostinfo.cgroup_controllers(hostinfo.read_mountinfo())
        self.assertIn(found.get("memory"), ("v1", "v2"))
        self.assertIn(hostinfo.cgroup_mode(found), ("v1", "v2", "hybrid"))

    def test_go_arch(self) -> None:
        self.assertEqual([platforms.go_arch(m) for m in ("x86_64", "aarch64", "riscv64")],
                         ["amd64", "arm64", "riscv64"])
