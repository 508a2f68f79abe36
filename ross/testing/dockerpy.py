"""
docker-py's own integration tests against a real Ross daemon's Docker API
(outside the suite: they take minutes). Their tests are in docker-py's
source tree, not in its release:

    git clone https://github.com/docker/docker-py /tmp/docker-py
    .venv/bin/pip install pytest pytest-timeout paramiko
    .venv/bin/python -m ross.testing.dockerpy /tmp/docker-py [pytest options]

Skipped: what needs swarm (services, secrets, configs, nodes) or plugins.
The tests' image (alpine:3.10) is busybox here, made offline: tests that
need alpine itself (its users, its directories) or Docker Hub fail.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from ross.testing.daemon import DaemonProcess, short_tempdir
from ross.testing.images import docker_archive

#: docker-py's test modules of what Ross does not serve.
SKIPPED = ("swarm", "service", "secret", "config_test", "plugin", "nodes")


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    source, options = Path(argv[0]).resolve(), argv[1:]
    modules = sorted(str(p.relative_to(source)) for p in (source / "tests" / "integration").glob("*_test.py")
                     if not any(s in p.name for s in SKIPPED))
    if not modules:
        print(f"no docker-py integration tests under {source}", file=sys.stderr)
        return 2
    daemon = DaemonProcess(short_tempdir("ross-dockerpy-"))
    try:
        daemon.start()
        env = dict(os.environ, DOCKER_HOST=f"unix://{daemon.exec_root / 'docker.sock'}")
        with tempfile.TemporaryDirectory(prefix="ross-dockerpy-") as tmp:
            archive = docker_archive(Path(tmp) / "busybox.tar", tags=["busybox:latest", "alpine:3.10",
                                                                       "alpine:latest"]).path
            daemon.ross("load", "-i", str(archive), timeout=120)
            # Their client configuration and contexts, not the user's.
            env.pop("DOCKER_CONFIG", None)
            env["HOME"] = tmp
            return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--timeout", "120",
                                   "-rf", *modules, *options], cwd=source, env=env, timeout=3600).returncode
    finally:
        # Containers outlive a daemon, and a failed test leaves its own:
        # none may outlive this run.
        if daemon.process is not None and daemon.process.poll() is None:
            left = daemon.ross("ps", "-aq", "--no-trunc", timeout=60).stdout.decode().split()
            if left:
                daemon.ross("rm", "-f", *left, timeout=300)
        daemon.stop()
        daemon.cleanup()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
