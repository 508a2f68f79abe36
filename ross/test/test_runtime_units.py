"""
Tests for the pure parts of the container set-up: mount options,
capability names, path resolution inside a root, user resolution.
"""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from ross.engine.runtime import linux
from ross.engine.runtime.container import StartError, resolve_user, secure_join


class LinuxTests(SynchronousTestCase):
    def test_mount_options(self) -> None:
        flags, data = linux.mount_options(["ro", "nosuid", "lowerdir=/a:/b", "upperdir=/u", "rbind"])
        self.assertEqual(flags, linux.MS_RDONLY | linux.MS_NOSUID | linux.MS_BIND | linux.MS_REC)
        self.assertEqual(data, "lowerdir=/a:/b,upperdir=/u")

    def test_capabilities(self) -> None:
        self.assertEqual(linux.capability_mask(linux.DEFAULT_CAPABILITIES), 0xA80425FB)
        self.assertEqual(linux.capability_number("cap_sys_admin"), 21)
        with self.assertRaises(ValueError):
            linux.capability_number("FLY")


class SecureJoinTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.root = os.path.abspath(self.mktemp())
        os.makedirs(self.root + "/etc/real")
        os.symlink("/etc/real", self.root + "/abs")
        os.symlink("../../../../..", self.root + "/etc/up")
        os.symlink("loop", self.root + "/loop")

    def test_stays_inside(self) -> None:
        """
        Absolute links, ".." and links climbing out resolve within the root.
        """
        self.assertEqual(secure_join(self.root, "/abs/x"), self.root + "/etc/real/x")
        self.assertEqual(secure_join(self.root, "/../../etc"), self.root + "/etc")
        self.assertEqual(secure_join(self.root, "/etc/up/tmp"), self.root + "/tmp")
        self.assertEqual(secure_join(self.root, "/"), self.root)

    def test_loop(self) -> None:
        with self.assertRaises(StartError):
            secure_join(self.root, "/loop/x")


class UserTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.passwd = self.mktemp()
        self.group = self.mktemp()
        with open(self.passwd, "w") as f:
            f.write("root:x:0:0:root:/root:/bin/sh\nweb:x:33:33::/var/www:/bin/false\n")
        with open(self.group, "w") as f:
            f.write("root:x:0:\nweb:x:33:\nstaff:x:50:web,other\n")

    def resolve(self, user: str, extra: list[str] | None = None) -> tuple[int, int, list[int], str]:
        return resolve_user(user, extra or [], self.passwd, self.group)

    def test_forms(self) -> None:
        self.assertEqual(self.resolve(""), (0, 0, [], "/root"))
        self.assertEqual(self.resolve("web"), (33, 33, [50], "/var/www"))
        self.assertEqual(self.resolve("33:staff"), (33, 50, [50], "/var/www"))
        self.assertEqual(self.resolve("1000"), (1000, 0, [], "/"))
        self.assertEqual(self.resolve("1000:1000", ["staff", "7"]), (1000, 1000, [7, 50], "/"))

    def test_unknown(self) -> None:
        with self.assertRaises(StartError) as cm:
            self.resolve("nobody")
        self.assertEqual(cm.exception.code, 125)
        with self.assertRaises(StartError):
            self.resolve("web:nogroup")
