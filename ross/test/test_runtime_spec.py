"""
Tests for L{ross.engine.runtime.spec}: validation and the wire form.
"""

from __future__ import annotations

import marshal
import os

from twisted.trial.unittest import SynchronousTestCase

from ross import errors
from ross.engine import etcfiles
from ross.engine.containers import config
from ross.engine.records import Mount
from ross.engine.runtime import spec as rs


def make(**fields: object) -> rs.ContainerSpec:
    process = fields.pop("process", rs.Process(args=("true",)))
    return rs.ContainerSpec(id=str(fields.pop("id", "abc")), rootfs=(Mount("bind", "/r", "", ("rbind",)),),
                            process=process, **fields)  # type: ignore[arg-type]


class ValidateTests(SynchronousTestCase):
    def test_good(self) -> None:
        rs.validate(make(mounts=(rs.BindMount("/a", "/b", propagation="rslave"), rs.TmpfsMount("/t")),
                         cap_add=("CAP_NET_ADMIN", "ALL"), resources=rs.Resources(memory=64 << 20),
                         network="/proc/1/ns/net"))

    def test_bad(self) -> None:
        """
        Each malformed field is refused with InvalidArgument naming it.
        """
        cases = {
            "invalid container id": make(id="../x"),
            "no command": make(process=rs.Process(args=())),
            "must be absolute": make(mounts=(rs.BindMount("/a", "b"),)),
            "propagation": make(mounts=(rs.BindMount("/a", "/b", propagation="weird"),)),
            "network mode": make(network="bridge0"),
            "Minimum memory": make(resources=rs.Resources(memory=1 << 20)),
            "memoryswap": make(resources=rs.Resources(memory=64 << 20, memory_swap=32 << 20)),
            "unknown capability": make(cap_drop=("FLY",)),
            "pids limit": make(resources=rs.Resources(pids_limit=-2)),
            "log options": make(log=rs.LogConfig("/l", max_files=0)),
            "terminal size": make(process=rs.Process(args=("sh",), console_size=(0, 80))),
        }
        for text, spec in cases.items():
            with self.assertRaises(errors.InvalidArgument) as cm:
                rs.validate(spec)
            self.assertIn(text, str(cm.exception))


class WireTests(SynchronousTestCase):
    def test_marshallable_and_defaults(self) -> None:
        """
        The wire form is plain data; hostname defaults to the ID's first 12
        characters and /etc/hosts names it.
        """
        wire = rs.to_wire(make(id="0123456789abcdef", privileged=True, mounts=(rs.TmpfsMount("/t", size=5),)))
        self.assertEqual(marshal.loads(marshal.dumps(dict(wire))), wire)
        self.assertEqual(wire["hostname"], "0123456789ab")
        self.assertIn("127.0.1.1\t0123456789ab\n", wire["hosts"])
        self.assertTrue(wire["process"]["privileged"])
        self.assertEqual(wire["mounts"][0]["type"], "tmpfs")
        self.assertIsNone(wire["resolv_conf"])

    def test_resolv_conf(self) -> None:
        host = "search x\nnameserver 127.0.0.53\nnameserver 10.0.0.2\n"
        self.assertEqual(etcfiles.resolv_conf_for(host, "none"), "search x\nnameserver 10.0.0.2\n")
        self.assertEqual(etcfiles.resolv_conf_for(host, "host"), host)
        self.assertIn("nameserver 8.8.8.8", etcfiles.resolv_conf_for("nameserver 127.0.0.1\n", "none"))


class ResourcesTests(SynchronousTestCase):
    def test_one_set_of_rules(self) -> None:
        """
        The limits no container can have are refused by the one check the
        API (at create and update) and the runtime (at every start) both
        run, with docker's messages; -1, docker's "no pids limit", passes
        to the runtime as it is.
        """
        bad = {
            "limits cannot be negative": rs.Resources(cpu_shares=-5),
            "Minimum memory limit allowed is 6MB": rs.Resources(memory=1 << 20),
            "memoryswap limit should be larger": rs.Resources(memory=64 << 20, memory_swap=32 << 20),
            "invalid pids limit": rs.Resources(pids_limit=-2),
        }
        for text, resources in bad.items():
            for check in (resources.check, lambda: rs.validate(make(resources=resources)),
                          lambda: config.validate_update(config.HostConfig(resources=resources), 2)):
                with self.assertRaises(errors.InvalidArgument) as cm:
                    check()
                self.assertIn(text, str(cm.exception))
        rs.validate(make(resources=rs.Resources(memory=64 << 20, memory_swap=-1, pids_limit=-1)))


class HostDevicesTests(SynchronousTestCase):
    """
    L{rs.host_devices}: the host's nodes a --device names, and what it
    refuses.
    """

    def test_node(self) -> None:
        [null] = rs.host_devices("/dev/null", "/dev/n", "r")
        self.assertEqual((null.path, null.type, null.major, null.minor, null.permissions, null.source),
                         ("/dev/n", "c", 1, 3, "r", "/dev/null"))
        self.assertEqual(rs.to_wire(rs.ContainerSpec(id="c1", rootfs=(), process=rs.Process(args=("sh",)),
                                                     devices=(null,)))["devices"],
                         [("/dev/n", "c", 1, 3, null.mode, 0, 0, "r", "/dev/null")])

    def test_directory(self) -> None:
        found = rs.host_devices("/dev/net", "/x/net")
        self.assertEqual([(d.path, d.major, d.minor) for d in found], [("/x/net/tun", 10, 200)])

    def test_refused(self) -> None:
        with self.assertRaises(errors.InvalidArgument) as raised:
            rs.host_devices("/dev/nope")
        self.assertIn("adding custom device '/dev/nope': no such file or directory", str(raised.exception))
        with self.assertRaises(errors.InvalidArgument) as raised:
            rs.host_devices("/etc/hostname")
        self.assertIn("not a device node", str(raised.exception))

    def test_walk_is_bounded(self) -> None:
        """
        A directory of many files is refused once more entries than
        L{rs.MAX_DEVICE_WALK} were looked at, not walked to its end.
        """
        directory = self.mktemp()
        os.makedirs(directory)
        for i in range(20):
            open(os.path.join(directory, str(i)), "w").close()
        self.patch(rs, "MAX_DEVICE_WALK", 10)
        with self.assertRaises(errors.InvalidArgument) as raised:
            rs.host_devices(directory)
        self.assertIn("more than 10 entries", str(raised.exception))
        self.patch(rs, "MAX_DEVICE_WALK", 100)
        self.assertEqual(rs.host_devices(directory), [])
