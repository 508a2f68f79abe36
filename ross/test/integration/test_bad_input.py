"""
Requests the fuzzer (L{ross.test.integration.test_fuzz}) found answered
with INTERNAL, a traceback or a change of state, kept as plain tests: each
must be refused with the right status code, a message that names the
problem, and nothing changed (SPEC 11).

The daemon runs in-process, so an unexpected error it logs fails the test
too (trial reports logged errors).
"""

from __future__ import annotations

from typing import Any, Callable

import grpc
from twisted.trial.unittest import TestCase

from ross.testing.daemon import InProcessDaemon
from ross.v1 import common_pb2, image_pb2


class BadInputTests(TestCase):
    timeout = 120

    async def setUp(self) -> None:  # type: ignore[override]
        self.daemon = InProcessDaemon(self)
        await self.daemon.start()
        self.clients = self.daemon.clients()

    async def refused(self, call: Callable[..., Any], request: Any, code: grpc.StatusCode, words: str) -> None:
        """
        C{call(request)} fails with C{code} and a message containing
        C{words}.
        """
        try:
            await self.daemon.call(call, request, timeout=30)
        except grpc.RpcError as e:
            self.assertEqual(e.code(), code, e.details())
            self.assertIn(words, e.details())
        else:
            self.fail(f"{request} was accepted")

    async def test_login_address_not_a_host(self) -> None:
        """
        A server address urllib cannot split ("[" opens an IPv6 literal
        that never closes) is INVALID_ARGUMENT, not INTERNAL.
        """
        images = self.clients.images
        auth = common_pb2.RegistryAuth(username="u", server_address="x[y")
        await self.refused(images.Login, image_pb2.LoginRequest(auth=auth), grpc.StatusCode.INVALID_ARGUMENT,
                           "invalid registry address")
        auth.server_address = "http://[::1"
        await self.refused(images.Login, image_pb2.LoginRequest(auth=auth), grpc.StatusCode.INVALID_ARGUMENT,
                           "invalid registry address")
        await self.refused(images.Logout, image_pb2.LogoutRequest(server_address="a b"),
                           grpc.StatusCode.INVALID_ARGUMENT, "invalid registry address")
