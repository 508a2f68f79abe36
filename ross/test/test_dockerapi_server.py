"""
The Docker API's listeners: the --docker-listen option, TCP with TLS and
mutual TLS as the gRPC API has them, the bearer token, and streams that a
stopping daemon ends.
"""

from __future__ import annotations

import http.client
import os
import shutil
from typing import Any

import docker
from twisted.internet.defer import inlineCallbacks
from twisted.python import usage
from twisted.trial.unittest import TestCase

from ross.address import parse_listen
from ross.services.grpc_server import TLSFiles
from ross.tap import Options
from ross.testing import certs
from ross.testing.daemon import InProcessDaemon, short_tempdir
from ross.testing.dockerapi import UnixHTTPConnection, request


class OptionsTests(TestCase):
    def parse(self, *argv: str) -> Options:
        options = Options()
        options.parseOptions(list(argv))
        return options

    def test_default_none_and_repeat(self) -> None:
        """
        By default the Docker API listens beside the gRPC socket (None:
        decided by the exec root); none turns it off; the option repeats.
        """
        self.assertIsNone(self.parse()["docker-listeners"])
        self.assertEqual(self.parse("--docker-listen", "none")["docker-listeners"], [])
        options = self.parse("--docker-listen", "unix:///tmp/d.sock", "--docker-listen", "tcp://127.0.0.1:2375")
        self.assertEqual([str(x) for x in options["docker-listeners"]], ["unix:///tmp/d.sock", "tcp://127.0.0.1:2375"])

    def test_refused(self) -> None:
        """
        A reachable TCP listener without TLS, none with other addresses,
        and bad addresses are usage errors.
        """
        for argv, message in [
            (["--docker-listen", "tcp://0.0.0.0:2375"], "refusing to listen on tcp://0.0.0.0:2375 without TLS"),
            (["--docker-listen", "none", "--docker-listen", "unix:///tmp/d.sock"], "give no other address"),
            (["--docker-listen", "ftp://x"], "invalid address"),
        ]:
            e = self.assertRaises(usage.UsageError, self.parse, *argv)
            self.assertIn(message, str(e))


class ListenerTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_none(self) -> Any:
        """
        Turned off, the daemon makes no docker.sock.
        """
        daemon = InProcessDaemon(self, docker_listeners=[])
        yield daemon.start()
        self.assertIsNone(daemon.daemon.docker)
        self.assertFalse(os.path.exists(daemon.exec_root / "docker.sock"))

    @inlineCallbacks
    def test_token(self) -> Any:
        """
        With the daemon's bearer token, every Docker API request needs it
        (docker's clients send it from config.json's HttpHeaders).
        """
        daemon = InProcessDaemon(self, token="tok-123")
        yield daemon.start()
        path = str(daemon.exec_root / "docker.sock")
        for headers in ({}, {"Authorization": "Bearer nope"}):
            status, _, body = yield daemon.call(request, path, "GET", "/_ping", None, headers)
            self.assertEqual((status, body), (401, b'{"message":"missing or invalid bearer token"}\n'))
        status, _, body = yield daemon.call(request, path, "GET", "/_ping", None,
                                            {"Authorization": "Bearer tok-123"})
        self.assertEqual((status, body), (200, b"OK"))

    @inlineCallbacks
    def test_stop_ends_streams(self) -> Any:
        """
        A stopping daemon ends the streams clients follow (here /events),
        which would otherwise hold it up.
        """
        daemon = InProcessDaemon(self)
        yield daemon.start()
        connection = UnixHTTPConnection(str(daemon.exec_root / "docker.sock"), timeout=30)
        self.addCleanup(connection.close)
        yield daemon.call(connection.request, "GET", "/events")
        response = yield daemon.call(connection.getresponse)
        self.assertEqual(response.status, 200)
        reading = daemon.call(response.read)
        yield daemon.stop()
        yield self.assertFailure(reading, http.client.IncompleteRead)


class TLSTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def serve(self, mutual: bool) -> Any:
        self.ca = certs.authority()
        server = self.ca.issue("ross-daemon", server=True)
        tls = TLSFiles(cert=server.cert, key=server.key, ca=self.ca.pem if mutual else None)
        self.daemon = InProcessDaemon(self, tls=tls, docker_listeners=[parse_listen("tcp://127.0.0.1:0")])
        yield self.daemon.start()
        service = self.daemon.daemon.docker
        self.address = service.address_of(service.listeners[0])
        self.files = short_tempdir()
        self.addCleanup(shutil.rmtree, self.files, True)
        self.ca_file = self.files / "ca.pem"
        self.ca_file.write_bytes(self.ca.pem)

    def client(self, cert: tuple[str, str] | None, ca: str) -> Any:
        tls = docker.tls.TLSConfig(client_cert=cert, ca_cert=ca, verify=True)
        client = docker.APIClient(base_url=self.address.replace("tcp://", "https://"), tls=tls, version="1.44",
                                  timeout=10)
        # The CA given, not REQUESTS_CA_BUNDLE's from the environment.
        client.trust_env = False
        self.addCleanup(client.close)
        return client

    @inlineCallbacks
    def test_tls(self) -> Any:
        """
        Over TLS, a client trusting the CA is served; one trusting
        another CA refuses the daemon.
        """
        yield self.serve(mutual=False)
        good = self.client(None, str(self.ca_file))
        self.assertTrue((yield self.daemon.call(good.ping)))
        other = self.files / "other.pem"
        other.write_bytes(certs.authority("Somebody Else").pem)
        # requests' SSLError: an OSError.
        yield self.assertFailure(self.daemon.call(self.client(None, str(other)).ping), OSError)

    @inlineCallbacks
    def test_mutual_tls(self) -> Any:
        """
        With the daemon's CA, only clients with a certificate from it get
        an answer.
        """
        yield self.serve(mutual=True)
        alice = self.ca.issue("alice").write(self.files, "alice")
        self.assertTrue((yield self.daemon.call(self.client(alice, str(self.ca_file)).ping)))
        mallory = certs.authority("Mallory CA").issue("mallory").write(self.files, "mallory")
        for cert in (None, mallory):
            yield self.assertFailure(self.daemon.call(self.client(cert, str(self.ca_file)).ping), OSError)
