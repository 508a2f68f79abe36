"""
Every RPC of ross.v1 fuzzed against a real daemon (SPEC 11, 16).

Requests come from the proto descriptors (L{ross.testing.fuzz}); for each,
what must hold (L{ross.testing.fuzz.World.check}): no INTERNAL or UNKNOWN
status, an error message that says something, the daemon alive with no
traceback in its log, a refused request changing nothing (the lists of
containers, images, volumes, networks and snapshots compared before and
after), and another client's Ping/ListContainers loop answered throughout.

Nothing is left out. RPCs with real effects run too, made safe rather than
skipped: the daemon has a private root (Prune, PruneImages, RemoveImage...
only ever remove its own objects, which are made again before the next RPC)
and a network namespace with nothing but loopback (PullImage, PushImage
and Login reach no registry but their own refusals; CreateNetwork's
bridges and rules live and die in that namespace). Containers a valid
random request makes are removed after it.

Examples per RPC: C{ROSS_FUZZ_EXAMPLES} (default L{CI_EXAMPLES}). Left
unset, the run is derandomized (the same requests every time) and failing
examples are reported as found; set, each run draws new requests and
shrinks a failure to its simplest form, for long runs by hand:

    ROSS_FUZZ_EXAMPLES=2000 ./dev test ross.test.integration.test_fuzz

A case found here stays as a plain test in
L{ross.test.integration.test_bad_input}.
"""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import FlakyFailure
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from ross.testing.daemon import DaemonProcess
from ross.testing.fuzz import LoopbackOnly, Rpc, World, every_rpc, fuzz_each, request_of

#: Examples per RPC in CI: enough to reach every handler's checks, few
#: enough for the whole module to take a couple of minutes.
CI_EXAMPLES = 12

#: Seconds a call may take. Streams that follow (logs, events, stats,
#: sessions) are cut off by it on purpose: a short one keeps them cheap.
UNARY_DEADLINE = 5.0
STREAM_DEADLINE = 1.5

_long = os.environ.get("ROSS_FUZZ_EXAMPLES")
settings.register_profile(
    "ross-ci", max_examples=CI_EXAMPLES, derandomize=True, database=None, deadline=None,
    phases=(Phase.explicit, Phase.generate), suppress_health_check=list(HealthCheck), print_blob=False)
settings.register_profile(
    "ross-long", max_examples=int(_long or 0) or CI_EXAMPLES, derandomize=False, database=None, deadline=None,
    suppress_health_check=list(HealthCheck), print_blob=True)
PROFILE = settings.get_profile("ross-long" if _long else "ross-ci")


def deadline_of(rpc: Rpc) -> float:
    return STREAM_DEADLINE if rpc.server_streaming or rpc.client_streaming else UNARY_DEADLINE


class FuzzTests(TestCase):
    """
    One test per service, each with a daemon of its own; the RPCs of the
    service are fuzzed one after the other, and every RPC that broke a rule
    is reported (with the request that did) at the end.
    """

    timeout = 1200

    def fuzz(self, service: str) -> Any:
        netns = LoopbackOnly()
        netns.create()
        self.addCleanup(netns.destroy)
        daemon = DaemonProcess(netns=netns.name)
        self.addCleanup(daemon.cleanup)
        return deferToThread(self._fuzz, daemon, service)

    def _fuzz(self, daemon: DaemonProcess, service: str) -> None:
        failures = fuzz_each(daemon, [r for r in every_rpc() if r.service == service], self._fuzz_rpc, str)
        self.assertEqual(failures, [], "\n\n".join(failures))

    def _fuzz_rpc(self, world: World, rpc: Rpc) -> str | None:
        deadline = deadline_of(rpc)
        seeds = world.seeds(rpc)

        @PROFILE
        @given(st.data())
        def run(data: Any) -> None:
            request = data.draw(request_of(rpc, world.words, world.samples, seeds), label="request")
            world.check(rpc, request, deadline)

        try:
            run()
        except AssertionError as e:
            return str(e)
        except FlakyFailure as e:
            # Failed once, passed when tried again: still a failure to see.
            return "\n".join(str(inner) for inner in e.exceptions)
        return None

    def test_system(self) -> Any:
        return self.fuzz("SystemService")

    def test_containers(self) -> Any:
        return self.fuzz("ContainerService")

    def test_images(self) -> Any:
        return self.fuzz("ImageService")

    def test_snapshots(self) -> Any:
        return self.fuzz("SnapshotterService")

    def test_volumes(self) -> Any:
        return self.fuzz("VolumeService")

    def test_networks(self) -> Any:
        return self.fuzz("NetworkService")
