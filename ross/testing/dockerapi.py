"""
Tests of the Docker API with docker's own clients: docker-py against the
in-process daemon's docker.sock, and docker's CLI as a user runs it.
"""

from __future__ import annotations

import http.client
import socket
from typing import Any, Callable, TypeVar

import docker
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.threads import deferToThread

from ross.testing.containers import ContainerTestCase

T = TypeVar("T")

#: Seconds any one docker-py call may take (it bounds each socket read).
CLIENT_TIMEOUT = 60


class UnixHTTPConnection(http.client.HTTPConnection):
    """
    Plain HTTP over a unix socket, for what docker-py hides: raw status
    lines, headers, versions.
    """

    def __init__(self, path: str, timeout: float = CLIENT_TIMEOUT) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


def request(path: str, method: str, url: str, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """
    One HTTP request to the unix socket C{path} (blocking): status,
    headers (lower-case names) and body.
    """
    connection = UnixHTTPConnection(path)
    try:
        connection.request(method, url, body=body, headers=headers or {})
        response = connection.getresponse()
        data = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data
    finally:
        connection.close()


class DockerAPITestCase(ContainerTestCase):
    """
    A daemon with busybox, and docker-py's low-level client on its Docker
    API socket (C{self.docker}), negotiating the version as usual.
    """

    # trial runs a Deferred-returning setUp; its TestCase keeps unittest's
    # `-> None` (twisted/twisted#12037).
    @inlineCallbacks
    def setUp(self) -> Any:  # type: ignore[override]
        yield super().setUp()
        self.socket_path = str(self.daemon.exec_root / "docker.sock")
        self.docker_host = f"unix://{self.socket_path}"
        yield deferToThread(self._connect)

    def _connect(self) -> None:
        self.docker = docker.APIClient(base_url=self.docker_host, version="auto", timeout=CLIENT_TIMEOUT)
        self.addCleanup(self.docker.close)

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        """
        A blocking client call, in a thread.
        """
        return deferToThread(fn, *args, **kwargs)

    def http(self, method: str, url: str, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> Deferred[tuple[int, dict[str, str], bytes]]:
        return deferToThread(request, self.socket_path, method, url, body, headers)
