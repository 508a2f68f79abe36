"""
Tests for the image config ``ross commit`` makes of a container's settings
(pure logic).
"""

from __future__ import annotations

from typing import Any, Mapping

from twisted.trial.unittest import SynchronousTestCase

from ross.engine.containers import config as cfg
from ross.engine.containers.commit import created_by, image_config

BASE = {
    "Env": ["PATH=/bin", "FROM_IMAGE=1"],
    "Cmd": ["sh"],
    "Shell": ["/bin/ash", "-c"],
    "Labels": {"base": "yes"},
}


def effective(config: cfg.ContainerConfig, base: Mapping[str, Any] = BASE) -> cfg.ContainerConfig:
    """The config a container created with C{config} has, as create computes it."""
    return cfg.merge(config, cfg.ImageDefaults.from_oci(base), "0123456789ab" + "0" * 52)


class ImageConfigTests(SynchronousTestCase):
    def test_container_settings(self) -> None:
        """
        The container's command, environment, user, directory, labels,
        ports and stop signal replace the base's; keys a container has no
        say in (Shell) stay.
        """
        config = effective(cfg.ContainerConfig(
            image="base", cmd=("echo", "hi"), env=("A=1",), user="33", working_dir="/srv",
            labels={"mine": "1"}, exposed_ports=("80/tcp",), stop_signal="SIGUSR1",
            healthcheck=cfg.HealthConfig(test=("CMD", "true"), interval_ns=5_000_000_000, retries=2)))
        self.assertEqual(image_config(config, BASE), {
            "Env": ["PATH=/bin", "FROM_IMAGE=1", "A=1"],
            "Cmd": ["echo", "hi"],
            "Shell": ["/bin/ash", "-c"],
            "Labels": {"base": "yes", "mine": "1"},
            "WorkingDir": "/srv",
            "User": "33",
            "ExposedPorts": {"80/tcp": {}},
            "StopSignal": "SIGUSR1",
            "Healthcheck": {"Test": ["CMD", "true"], "Interval": 5_000_000_000, "Retries": 2},
        })
        self.assertEqual(created_by(config), "echo hi")

    def test_daemon_defaults_left_out(self) -> None:
        """
        What create added itself (HOSTNAME, TERM for -t, the default PATH,
        WorkingDir "/", StopSignal SIGTERM) is not stored; the same values
        from the image are kept.
        """
        bare: dict[str, object] = {"Cmd": ["sh"]}
        config = effective(cfg.ContainerConfig(image="base", tty=True), bare)
        self.assertIn(f"PATH={cfg.DEFAULT_PATH}", config.env)
        self.assertEqual(image_config(config, bare), {"Cmd": ["sh"]})
        kept: dict[str, Any] = {"Cmd": ["sh"], "Env": [f"PATH={cfg.DEFAULT_PATH}", "TERM=xterm"], "WorkingDir": "/",
                "StopSignal": "SIGTERM"}
        config = effective(cfg.ContainerConfig(image="base", tty=True, hostname="box"), kept)
        self.assertEqual(image_config(config, kept), kept)

    def test_cleared_command(self) -> None:
        """
        An entrypoint given at create clears the image's Cmd, in the new
        image too.
        """
        config = effective(cfg.ContainerConfig(image="base", entrypoint=("/bin/echo",)))
        out = image_config(config, BASE)
        self.assertEqual((out["Entrypoint"], "Cmd" in out), (["/bin/echo"], False))
        self.assertEqual(created_by(config), "")
