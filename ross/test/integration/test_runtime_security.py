"""
Integration tests for what confines a container: capabilities,
no_new_privs, masked and read-only kernel paths, devices, cgroup limits,
and the init reaper.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from twisted.trial.unittest import SkipTest, TestCase

from ross.engine.runtime import spec as rs
from ross.testing.runtime import RuntimeHarness

DOCKER_DEFAULT_CAPS = 0x00000000A80425FB


def own_status(field: str) -> str:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return line.split()[1]
    raise AssertionError(field)


class SecurityTests(RuntimeHarness, TestCase):
    def setUp(self) -> None:
        if os.geteuid() != 0:
            raise SkipTest("the runtime needs root")
        self.setUpRuntime()

    async def status_of(self, *fields: str, **spec_fields: Any) -> dict[str, str]:
        spec = self.spec("cat", "/proc/self/status", **spec_fields)
        status, out, _ = await self.run_container(spec)
        self.assertEqual(status.exit_code, 0)
        values = dict(line.split(":\t", 1) for line in out.decode().splitlines() if ":\t" in line)
        return {f: values[f].strip() for f in fields}

    async def test_default_capabilities(self) -> None:
        """
        Root in a container has docker's default capability set, bounded
        too, and no_new_privs.
        """
        got = await self.status_of("CapEff", "CapPrm", "CapBnd", "CapInh", "NoNewPrivs")
        self.assertEqual(int(got["CapEff"], 16), DOCKER_DEFAULT_CAPS)
        self.assertEqual(int(got["CapPrm"], 16), DOCKER_DEFAULT_CAPS)
        self.assertEqual(int(got["CapBnd"], 16), DOCKER_DEFAULT_CAPS)
        self.assertEqual((int(got["CapInh"], 16), got["NoNewPrivs"]), (0, "1"))

    async def test_cap_add_drop(self) -> None:
        """
        Added and dropped capabilities change the default set.
        """
        got = await self.status_of("CapEff", cap_add=("NET_ADMIN",), cap_drop=("CAP_NET_RAW", "MKNOD"))
        expected = (DOCKER_DEFAULT_CAPS | (1 << 12)) & ~(1 << 13) & ~(1 << 27)
        self.assertEqual(int(got["CapEff"], 16), expected)

    async def test_drop_all(self) -> None:
        got = await self.status_of("CapEff", cap_drop=("ALL",), cap_add=("CHOWN",))
        self.assertEqual(int(got["CapEff"], 16), 1)

    async def test_privileged(self) -> None:
        """
        A privileged container gets the capabilities the daemon has, not
        every capability the kernel knows.
        """
        got = await self.status_of("CapEff", "CapBnd", privileged=True)
        self.assertEqual(int(got["CapEff"], 16), int(own_status("CapBnd"), 16))
        self.assertEqual(got["CapBnd"], own_status("CapBnd"))

    async def test_non_root_user(self) -> None:
        """
        A non-root user has no effective capabilities, as with docker.
        """
        got = await self.status_of("CapEff", "Uid", user="1000:1000")
        self.assertEqual(int(got["CapEff"], 16), 0)
        self.assertEqual(got["Uid"].split()[0], "1000")

    async def test_no_new_privileges_off(self) -> None:
        got = await self.status_of("NoNewPrivs", no_new_privileges=False)
        self.assertEqual(got["NoNewPrivs"], "0")

    async def test_kernel_paths(self) -> None:
        """
        /proc/sys and friends are read-only, /proc/timer_list, /proc/keys
        and /sys/firmware masked (the host has them), /sys read-only, and mounting is refused.
        """
        script = (
            "echo 1 > /proc/sys/vm/drop_caches 2>/dev/null && echo wrote-sys || echo sys-refused; "
            "echo b > /proc/sysrq-trigger 2>/dev/null && echo wrote-sysrq || echo sysrq-refused; "
            "cat /proc/timer_list | wc -c; ls /sys/firmware | wc -l; grep -c ' /proc/keys ' /proc/mounts; "
            "touch /sys/x 2>/dev/null && echo wrote-sysfs || echo sysfs-refused; "
            "mount -t tmpfs t /mnt 2>/dev/null && echo mounted || echo mount-refused")
        status, out, _ = await self.run_container(self.spec("sh", "-c", script))
        self.assertEqual(out.decode().split(), ["sys-refused", "sysrq-refused", "0", "0", "1",
                                                 "sysfs-refused", "mount-refused"])

    async def test_runtime_files_modes(self) -> None:
        """
        The runtime's /etc files are 0644 and the directories it makes for
        mount targets 0755 (the shim works under umask 0): a user other
        than root in the container cannot rewrite /etc/hosts.
        """
        spec = self.spec("sh", "-c", "stat -c %a /etc/hosts /etc/hostname /etc/resolv.conf /a /a/b; "
                         "echo x >> /etc/hosts && echo wrote", user="1000:1000",
                         mounts=(rs.TmpfsMount(target="/a/b/c"),))
        status, out, err = await self.run_container(spec)
        self.assertEqual(out.decode().split(), ["644", "644", "644", "755", "755"])
        self.assertIn(b"Permission denied", err)

    async def test_privileged_unmasked(self) -> None:
        """
        A privileged container sees /proc/sys writable.
        """
        status, out, _ = await self.run_container(self.spec(
            "sh", "-c", "grep ' /proc/sys ' /proc/mounts | wc -l", privileged=True))
        self.assertEqual(out, b"0\n")

    async def test_devices(self) -> None:
        """
        CAP_MKNOD makes a node of a host disk, the devices cgroup refuses
        to open it; /dev has the usual nodes and a private devpts.
        """
        script = ("mknod /tmp/sda b 8 0 && echo made; head -c1 /tmp/sda 2>/dev/null || echo open-refused; "
                  "ls /dev | tr '\\n' ' '; echo; head -c 4 /dev/zero | wc -c; ls /dev/pts")
        status, out, err = await self.run_container(self.spec("sh", "-c", script))
        lines = out.decode().splitlines()
        self.assertEqual(lines[:2], ["made", "open-refused"])
        for name in ("null", "zero", "full", "random", "urandom", "tty", "ptmx", "pts", "shm", "mqueue", "fd"):
            self.assertIn(name, lines[2].split())
        self.assertEqual(lines[3], "4")
        self.assertEqual(lines[4:], ["ptmx"])

    async def test_network_none_loopback(self) -> None:
        """
        The container has its own network namespace with only lo, up.
        """
        status, out, _ = await self.run_container(self.spec("sh", "-c", "ls /sys/class/net; cat /sys/class/net/lo/operstate /sys/class/net/lo/flags"))
        self.assertEqual(out.decode().split()[:1], ["lo"])
        self.assertEqual(int(out.decode().split()[-1], 16) & 1, 1)

    async def test_network_host(self) -> None:
        """
        With the host's network, the host's interfaces are there.
        """
        # Other work on the host may add or remove links meanwhile: the
        # container sees every link there before and after, and no other.
        before = set(os.listdir("/sys/class/net"))
        status, out, _ = await self.run_container(self.spec("ls", "/sys/class/net", network="host"))
        after = set(os.listdir("/sys/class/net"))
        seen = set(out.decode().split())
        self.assertLessEqual(before & after, seen)
        self.assertLessEqual(seen, before | after)
        self.assertIn("lo", seen)

    async def test_pids_limit(self) -> None:
        """
        pids.max stops a fork loop.
        """
        spec = self.spec("sh", "-c", "for i in 1 2 3 4 5 6 7 8; do sleep 100 & done; echo done",
                         resources=rs.Resources(pids_limit=4))
        status, out, err = await self.run_container(spec)
        self.assertIn(b"can't fork", err)

    async def test_memory_oom(self) -> None:
        """
        Over its memory limit, the container is OOM-killed and the exit
        status says so.
        """
        spec = self.spec("dd", "if=/dev/zero", "of=/dev/null", "bs=128M", "count=1",
                         resources=rs.Resources(memory=16 << 20))
        status, _, _ = await self.run_container(spec)
        self.assertEqual((status.exit_code, status.signal, status.oom_killed), (137, 9, True))

    async def test_cpu_quota(self) -> None:
        """
        nano_cpus becomes a CFS quota.
        """
        handle = await self.start(self.spec("sleep", "100", resources=rs.Resources(nano_cpus=500_000_000)))
        with open(f"/sys/fs/cgroup/cpu/{self.cgroup_parent}/{handle.id}/cpu.cfs_quota_us") as f:
            self.assertEqual(f.read().strip(), "50000")
        with open(f"/sys/fs/cgroup/cpu/{self.cgroup_parent}/{handle.id}/cgroup.procs") as f:
            self.assertIn(str(handle.pid), f.read().split())
        await handle.kill(signal.SIGKILL)
        await handle.wait()

    async def test_init_reaps_zombies(self) -> None:
        """
        With init, PID 1 is a reaper: orphans are reaped, the command's exit
        code passes through, signals are forwarded.
        """
        script = ("(sleep 0.01 &); (sleep 0.01 &); sleep 0.3; "
                  "ps -o stat,comm | grep -c '^Z' ; echo pid$$; exit 4")
        status, out, _ = await self.run_container(self.spec("sh", "-c", script, init=True))
        self.assertEqual(status.exit_code, 4)
        self.assertEqual(out.decode().split(), ["0", "pid2"])

    async def test_init_forwards_signals(self) -> None:
        handle = await self.start(self.spec("sleep", "100", init=True))
        await handle.kill(signal.SIGTERM)
        status = await handle.wait()
        self.assertEqual(status.exit_code, 128 + signal.SIGTERM)
