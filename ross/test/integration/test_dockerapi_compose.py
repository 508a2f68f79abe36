"""
docker-compose 1.29 (through docker-py, as users run it) against the Docker
API: a two-service app with a network, a volume and a health check, up
and down.
"""

from __future__ import annotations

import os
import subprocess
import time
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread

from ross.testing.containers import sleep
from ross.testing.daemon import REPO
from ross.testing.dockerapi import DockerAPITestCase

COMPOSE = REPO / ".venv-compose" / "bin" / "docker-compose"

APP = """\
version: "2.4"
services:
  db:
    image: busybox
    command: sh -c 'echo db-ready > /data/state; exec httpd -f -p 8080 -h /data'
    volumes: [data:/data]
    networks: [back]
    healthcheck:
      test: ["CMD", "test", "-f", "/data/state"]
      interval: 1s
      retries: 30
  web:
    image: busybox
    command: sh -c 'while true; do wget -qO- http://db:8080/state; sleep 0.5; done'
    depends_on:
      db: {condition: service_healthy}
    networks: [back]
volumes: {data: {}}
networks: {back: {}}
"""


class ComposeTests(DockerAPITestCase):
    def compose(self, *args: str, timeout: float = 120.0) -> Any:
        env = dict(os.environ, DOCKER_HOST=self.docker_host, DOCKER_CONFIG=os.path.abspath(self.mktemp()),
                   COMPOSE_INTERACTIVE_NO_CLI="1")
        # compose has its own virtualenv: a trial worker's PYTHONPATH (the
        # test's sys.path) would give it this one's docker-py, too new.
        env.pop("PYTHONPATH", None)
        return deferToThread(subprocess.run, [str(COMPOSE), "-p", "rossapp", *args], cwd=self.project,
                             capture_output=True, env=env, timeout=timeout)

    @inlineCallbacks
    def test_up_down(self) -> Any:
        """
        up -d makes the network and the volume, starts db, waits for its
        health check and starts web, which reaches db by name; ps, logs and
        exec work; down -v leaves nothing of the app.
        """
        self.assertTrue(COMPOSE.exists(), "./dev setup installs docker-compose in .venv-compose")
        self.project = os.path.abspath(self.mktemp())
        os.makedirs(self.project)
        with open(os.path.join(self.project, "docker-compose.yml"), "w") as f:
            f.write(APP)
        up = yield self.compose("up", "-d")
        self.assertEqual(up.returncode, 0, up.stderr)
        db = self.record("rossapp_db_1")
        self.assertEqual(db.state.health, "healthy")
        deadline = time.monotonic() + 30
        while True:
            logs = yield self.compose("logs", "--no-color", "web")
            if b"db-ready" in logs.stdout or time.monotonic() > deadline:
                break
            yield sleep(0.2)
        self.assertIn(b"db-ready", logs.stdout, logs.stderr)
        ps = yield self.compose("ps")
        self.assertEqual(ps.returncode, 0, ps.stderr)
        self.assertIn(b"Up (healthy)", ps.stdout)
        exec_ = yield self.compose("exec", "-T", "db", "cat", "/data/state")
        self.assertEqual(exec_.stdout, b"db-ready\n", exec_.stderr)
        engine = self.daemon.engine
        self.assertIn("rossapp_back", [n.name for n in engine.network.networks.values()])
        self.assertIn("rossapp_data", [v.name for v in engine.volumes.list()])
        down = yield self.compose("down", "-v")
        self.assertEqual(down.returncode, 0, down.stderr)
        self.assertEqual(list(engine.containers.records), [])
        self.assertEqual(sorted(n.name for n in engine.network.networks.values()), ["bridge"])
        self.assertEqual(engine.volumes.list(), [])
