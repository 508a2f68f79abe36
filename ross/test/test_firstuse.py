"""
Tests of L{ross.protocols.firstuse}: servers made for their first client.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import grpc
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from ross.protocols.firstuse import FirstCallHandler, FirstUseFactory

REPO = Path(__file__).resolve().parents[2]


class _Counting(Factory):
    protocol = Protocol

    def __init__(self) -> None:
        self.events: list[str] = []

    def startFactory(self) -> None:
        self.events.append("start")

    def stopFactory(self) -> None:
        self.events.append("stop")


class FirstUseFactoryTests(TestCase):
    def setUp(self) -> None:
        self.made: list[_Counting] = []
        self.factory = FirstUseFactory(self._make, "test")

    def _make(self) -> _Counting:
        factory = _Counting()
        self.made.append(factory)
        return factory

    def test_made_once_at_first_connection(self) -> None:
        """
        Listening makes nothing; the first connection makes the factory
        and starts it, later ones reuse it.
        """
        self.factory.doStart()
        self.assertEqual(self.made, [])
        first = self.factory.buildProtocol(None)
        second = self.factory.buildProtocol(None)
        self.assertEqual(len(self.made), 1)
        self.assertIsInstance(first, Protocol)
        self.assertIs(first.factory, self.made[0])
        self.assertIs(second.factory, self.made[0])
        self.assertEqual(self.made[0].events, ["start"])

    def test_stop_and_start_again(self) -> None:
        """
        The made factory stops with the last listener and starts again
        with the next one; never made, nothing is stopped.
        """
        self.factory.doStart()
        self.factory.doStop()
        self.assertEqual(self.made, [])
        self.factory.doStart()
        self.factory.buildProtocol(None)
        self.factory.doStop()
        self.factory.doStart()
        self.assertEqual(self.made[0].events, ["start", "stop", "start"])

    def test_protocols_of_the_made_factory(self) -> None:
        """
        Asked for its protocols (TLS's ALPN, at a connection), it makes
        the factory and says what that one speaks: twisted.web's site
        speaks http/1.1. A factory that says nothing gives none.
        """
        from twisted.web.resource import Resource
        from twisted.web.server import Site

        site = FirstUseFactory(lambda: Site(Resource()), "web")
        site.doStart()
        self.addCleanup(site.doStop)
        self.assertIn(b"http/1.1", site.acceptableProtocols())
        self.assertIsInstance(site.made, Site)
        self.assertEqual(self.factory.acceptableProtocols(), [])

    def test_two_listeners(self) -> None:
        """
        With two listeners, stopping one leaves the made factory running.
        """
        self.factory.doStart()
        self.factory.doStart()
        self.factory.buildProtocol(None)
        self.factory.doStop()
        self.assertEqual(self.made[0].events, ["start"])
        self.factory.doStop()
        self.assertEqual(self.made[0].events, ["start", "stop"])


class _Details(grpc.HandlerCallDetails):
    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


class FirstCallHandlerTests(TestCase):
    def test_made_once_across_threads(self) -> None:
        """
        Calls from several threads at once make the handlers once, and
        each finds its method; an unknown method finds nothing.
        """
        made: list[int] = []
        gate = threading.Event()

        def make() -> list[grpc.GenericRpcHandler]:
            gate.wait(5)
            made.append(1)
            handler: grpc.RpcMethodHandler[bytes, bytes] = grpc.unary_unary_rpc_method_handler(
                lambda request, context: request)
            return [grpc.method_handlers_generic_handler("test.Service", {"Echo": handler})]

        first_call = FirstCallHandler(make)
        found: list[Any] = []
        threads = [threading.Thread(target=lambda: found.append(first_call.service(_Details("/test.Service/Echo"))))
                   for _ in range(4)]
        for thread in threads:
            thread.start()
        gate.set()
        for thread in threads:
            thread.join(10)
        self.assertEqual(made, [1])
        self.assertEqual(len(found), 4)
        self.assertTrue(all(f is not None for f in found))
        self.assertIsNone(first_call.service(_Details("/test.Service/Other")))
        self.assertIsNone(first_call.service(_Details("/other.Service/Echo")))

    def test_failure_tried_again(self) -> None:
        """
        When making fails, the call fails and the next call tries again.
        """
        attempts: list[int] = []

        def make() -> list[grpc.GenericRpcHandler]:
            attempts.append(1)
            if len(attempts) == 1:
                raise RuntimeError("first")
            return []

        first_call = FirstCallHandler(make)
        self.assertRaises(RuntimeError, first_call.service, _Details("/a.B/C"))
        self.assertIsNone(first_call.service(_Details("/a.B/C")))
        self.assertEqual(len(attempts), 2)


class ImportsTests(TestCase):
    async def test_wiring_imports_no_server_code(self) -> None:
        """
        The daemon's wiring imports neither the Docker API's routes, the
        CRI's handlers nor twisted.web: they come with the first client;
        nor twisted.names, which comes with the first network that has
        DNS, nor pyOpenSSL.
        """
        script = ("import sys, ross.tap, ross.services.wiring, ross.cri.streaming\n"
                  "print(sorted(m for m in ('twisted.web.server', 'ross.dockerapi.api', 'ross.cri.api',"
                  " 'ross.cri.streamsite', 'twisted.names', 'OpenSSL') if m in sys.modules))\n")
        result = await deferToThread(subprocess.run, [sys.executable, "-c", script], capture_output=True,
                                     timeout=60, cwd=str(REPO))
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.strip(), b"[]")
