"""
The Docker API's create body as the engine's configs
(L{ross.dockerapi.schema.create_request}): HostConfig's lists and modes,
and what it refuses.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from ross.dockerapi.containers import go_file_mode
from ross.dockerapi.schema import create_request
from ross.engine.containers import config as cfg
from ross.errors import InvalidArgument


def host(**fields: Any) -> cfg.HostConfig:
    return create_request({"Image": "busybox", "HostConfig": fields}).host


class HostConfigTests(SynchronousTestCase):
    def test_lists(self) -> None:
        h = host(Devices=[{"PathOnHost": "/dev/fuse", "PathInContainer": "", "CgroupPermissions": ""},
                          {"PathOnHost": "/dev/zero", "PathInContainer": "/dev/z", "CgroupPermissions": "r"}],
                 Ulimits=[{"Name": "nofile", "Soft": 10, "Hard": 20}], VolumesFrom=["db:ro"], UTSMode="host")
        self.assertEqual(h.devices, (cfg.Device("/dev/fuse", "/dev/fuse", "rwm"), cfg.Device("/dev/zero", "/dev/z", "r")))
        self.assertEqual(h.ulimits, (cfg.Ulimit("nofile", 10, 20),))
        self.assertEqual((h.volumes_from, h.uts_mode), (("db:ro",), "host"))
        self.assertEqual((host(Devices=None).devices, host().ulimits), ((), ()))
        mounts = host(Mounts=[{"Type": "bind", "Source": "/srv", "Target": "/m",
                               "BindOptions": {"NonRecursive": True, "Propagation": "rslave"}},
                              {"Type": "bind", "Source": "/srv", "Target": "/n"}]).mounts
        self.assertEqual([(m.non_recursive, m.propagation) for m in mounts], [(True, "rslave"), (False, "")])

    def test_refused(self) -> None:
        cases: list[tuple[dict[str, Any], str]] = [
            ({"Devices": {"PathOnHost": "/dev/fuse"}}, "invalid HostConfig.Devices: expected a list of objects"),
            ({"Ulimits": ["nofile=1"]}, "invalid HostConfig.Ulimits: expected a list of objects"),
            ({"UTSMode": "private"}, "HostConfig.UTSMode 'private' is not supported by Ross"),
            ({"Links": ["db:db"]}, "HostConfig.Links is not supported by Ross"),
        ]
        for fields, message in cases:
            with self.assertRaises(InvalidArgument) as raised:
                host(**fields)
            self.assertIn(message, str(raised.exception), fields)


class GoFileModeTests(SynchronousTestCase):
    def test_types_and_bits(self) -> None:
        """
        Unix modes become Go's os.FileMode, which docker's clients read
        from a path's stat.
        """
        self.assertEqual(go_file_mode(0o100644), 0o644)
        self.assertEqual(go_file_mode(0o041777), (1 << 31) | (1 << 20) | 0o777)
        self.assertEqual(go_file_mode(0o120777), (1 << 27) | 0o777)
        self.assertEqual(go_file_mode(0o020666), (1 << 26) | (1 << 21) | 0o666)
        self.assertEqual(go_file_mode(0o060660), (1 << 26) | 0o660)
        self.assertEqual(go_file_mode(0o010644), (1 << 25) | 0o644)
        self.assertEqual(go_file_mode(0o140755), (1 << 24) | 0o755)
        self.assertEqual(go_file_mode(0o106755), (1 << 23) | (1 << 22) | 0o755)
