"""
Every route of the Docker API fuzzed against a real daemon (SPEC 11, 14),
as test_fuzz does for ross.v1: random path segments (the daemon's own
names and IDs among them), query parameters, JSON and binary bodies and
headers. What must hold of every request: no 500 (docker's code for a
bug; 501 and 503 are its answers for what is not served), an error body that is docker's C{{"message": ...}} and says
something, the daemon alive with no traceback in its log, a refused
request changing nothing, another client served throughout. Streams and
hijacked connections are cut off by the client after a moment: a client
that goes away mid-stream is part of what is tried.

Examples per route: C{ROSS_FUZZ_EXAMPLES} (default L{CI_EXAMPLES}),
derandomized in CI as in test_fuzz.
"""

from __future__ import annotations

import json
import os
import socket
import urllib.parse
from collections import Counter
from typing import Any
from unittest import mock

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import FlakyFailure
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from ross.dockerapi.api import routes
from ross.dockerapi.router import Route
from ross.testing.daemon import DaemonProcess
from ross.testing.dockerapi import UnixHTTPConnection
from ross.testing.fuzz import LoopbackOnly, World, fuzz_each

CI_EXAMPLES = 12

#: Seconds before the client gives up on an answer (and goes away).
CUT_OFF = 1.5

_long = os.environ.get("ROSS_FUZZ_EXAMPLES")
PROFILE = settings(
    max_examples=int(_long or 0) or CI_EXAMPLES, derandomize=not _long, database=None, deadline=None,
    phases=(Phase.explicit, Phase.generate), suppress_health_check=list(HealthCheck), print_blob=bool(_long))

#: Query parameters docker's routes read, plus one they do not.
QUERY_KEYS = [
    "all", "filters", "since", "until", "tail", "follow", "stream", "stdout", "stderr", "stdin", "timestamps",
    "t", "force", "v", "signal", "condition", "timeout", "name", "tag", "repo", "fromImage", "fromSrc", "h", "w",
    "path", "noOverwriteDirAllowedForNonDir", "size", "limit", "dangling", "ps_args", "one-shot", "logs",
    "detachKeys", "link", "noprune", "comment", "author", "pause", "changes", "container", "q", "quiet",
    "dockerfile", "buildargs", "labels", "rm", "forcerm", "nocache", "target", "platform", "reference", "term",
    "names", "unknown-key",
]

#: Values that have broken parsers elsewhere.
AWKWARD = [
    "", "0", "1", "-1", "true", "false", "yes", "99999999999999999999", "1e309", "nan", "-0", " 1", "{", "[]",
    "null", '{"label":["a=b"]}', '{"status":{"running":true}}', '{"dangling":["true"]}', '{"until":["1h"]}',
    '{"before":["nosuch"]}', '{"name":[""]}', '["a"]', "..", "../..", "/", "a" * 300, "\x00", "\u00e9\u6f22\U0001f600",
    "SIGKILL", "SIGNOPE", "999", "stdout", "busybox:latest", "a:b:c", "sha256:", "%",
]


def json_values() -> st.SearchStrategy[Any]:
    leaves = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=False),
                       st.sampled_from(AWKWARD), st.text(max_size=12))
    return st.recursive(leaves, lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)), max_leaves=12)


#: Keys of docker's request bodies, so random objects reach the parsers.
BODY_KEYS = [
    "Image", "Cmd", "Entrypoint", "Env", "HostConfig", "NetworkingConfig", "Labels", "Tty", "OpenStdin",
    "AttachStdin", "AttachStdout", "AttachStderr", "WorkingDir", "User", "ExposedPorts", "Volumes", "Healthcheck",
    "StopSignal", "StopTimeout", "Binds", "PortBindings", "RestartPolicy", "Memory", "NanoCpus", "CpuShares",
    "PidsLimit", "NetworkMode", "Mounts", "Privileged", "CapAdd", "Name", "Driver", "IPAM", "Container",
    "EndpointConfig", "Force", "DetachKeys", "Detach", "ConsoleSize", "Options", "Internal",
    "EnableIPv6", "username", "password", "serveraddress",
]


def bodies(samples: list[bytes], image: str) -> st.SearchStrategy[tuple[bytes | None, str]]:
    # Objects that pass the first checks (an image that exists, a command)
    # take requests past them, into what parses the rest.
    plausible = st.fixed_dictionaries({"Image": st.just(image), "Cmd": st.just(["true"])},
                                      optional={key: json_values() for key in BODY_KEYS if key not in ("Image", "Cmd")})
    objects = st.one_of(st.dictionaries(st.sampled_from(BODY_KEYS), json_values(), max_size=6), plausible)
    as_json = st.one_of(objects, json_values()).map(lambda v: (json.dumps(v).encode(), "application/json"))
    raw = st.one_of(st.sampled_from(samples) if samples else st.nothing(), st.binary(max_size=300))
    return st.one_of(st.just((None, "")), as_json, raw.map(lambda b: (b, "application/x-tar")),
                     st.binary(max_size=40).map(lambda b: (b, "application/json")))


def path_of(r: Route, values: dict[str, str]) -> str:
    path = r.path
    for name, value in values.items():
        whole = "{" + name + ":.*}"
        if whole in path:
            path = path.replace(whole, urllib.parse.quote(value, safe="/:@"))
        else:
            path = path.replace("{" + name + "}", urllib.parse.quote(value, safe=""))
    return path


def parameters(r: Route) -> list[str]:
    return [segment.strip("{}").partition(":")[0] for segment in r.path.split("/") if segment.startswith("{")]


class Answer:
    def __init__(self, status: int | None, body: bytes) -> None:
        self.status = status
        self.body = body


def send(socket_path: str, method: str, url: str, body: bytes | None, headers: dict[str, str]) -> Answer:
    """One request; an answer still coming after L{CUT_OFF} is cut off (status None)."""
    connection = UnixHTTPConnection(socket_path, timeout=CUT_OFF)
    try:
        connection.request(method, url, body=body, headers=headers)
        response = connection.getresponse()
        if response.status == 101:
            return Answer(None, b"")
        return Answer(response.status, response.read())
    except (socket.timeout, TimeoutError):
        return Answer(None, b"")
    finally:
        connection.close()


class DockerAPIFuzzTests(TestCase):
    timeout = 1200

    def test_every_route(self) -> Any:
        netns = LoopbackOnly()
        netns.create()
        self.addCleanup(netns.destroy)
        daemon = DaemonProcess(netns=netns.name)
        self.addCleanup(daemon.cleanup)
        return deferToThread(self._fuzz, daemon)

    def _fuzz(self, daemon: DaemonProcess) -> None:
        socket_path = str(daemon.exec_root / "docker.sock")
        failures = fuzz_each(daemon, routes(mock.MagicMock()),
                             lambda world, r: self._fuzz_route(world, socket_path, r),
                             lambda r: f"{r.method.decode()} {r.path}")
        self.assertEqual(failures, [], "\n\n".join(failures))

    def _fuzz_route(self, world: World, socket_path: str, r: Route) -> str | None:
        method = r.method.decode()
        names = parameters(r)
        # The fixtures' own names a third of the time: past the lookup.
        segment = st.one_of(st.sampled_from(sorted(set(world.names.values()))),
                            st.sampled_from(world.words + AWKWARD), st.text(min_size=1, max_size=30))
        query = st.dictionaries(st.sampled_from(QUERY_KEYS),
                                st.one_of(st.sampled_from(AWKWARD + world.words), st.text(max_size=16)), max_size=5)

        @PROFILE
        @given(values=st.fixed_dictionaries({n: segment for n in names}), params=query,
               version=st.sampled_from(["", "/v1.44", "/v1.41", "/v1.24", "/v1.99", "/v1.12"]),
               payload=bodies(world.samples, world.names["image"]), auth=st.sampled_from([None, "", "e30=", "not base64!", "bnVsbA=="]))
        def run(values: dict[str, str], params: dict[str, str], version: str, payload: tuple[bytes | None, str],
                auth: str | None) -> None:
            url = version + path_of(r, values)
            if params:
                url += "?" + urllib.parse.urlencode(params)
            body, content_type = payload
            headers = {"Content-Type": content_type} if content_type else {}
            if auth is not None:
                headers["X-Registry-Auth"] = auth
            what = f"{method} {url[:300]} with {len(body or b'')} bytes of {content_type or 'nothing'}"
            before = world.state()
            answer = send(socket_path, method, url, body, headers)
            world.outcomes.setdefault(f"{method} {r.path}", Counter())[str(answer.status or "cut off")] += 1
            daemon_log = world.new_log()
            if world.daemon.process.poll() is not None:
                raise AssertionError(f"{what}: the daemon died:\n{daemon_log[-6000:]}")
            if "Traceback" in daemon_log or "Unhandled" in daemon_log:
                raise AssertionError(f"{what}: {answer.status}, and the daemon logged:\n{daemon_log[-6000:]}")
            if answer.status == 500:
                raise AssertionError(f"{what}: {answer.status} {answer.body[:400]!r}")
            if answer.status is not None and answer.status >= 400:
                if method != "HEAD":
                    try:
                        message = json.loads(answer.body)["message"]
                    except (ValueError, KeyError, TypeError):
                        raise AssertionError(f"{what}: {answer.status} without docker's error body: "
                                             f"{answer.body[:300]!r}") from None
                    if not isinstance(message, str) or not message.strip():
                        raise AssertionError(f"{what}: {answer.status} with an empty message")
                after = world.state()
                if after != before:
                    raise AssertionError(f"{what}: refused with {answer.status} ({answer.body[:200]!r}) but the "
                                         f"state changed:\nbefore {before}\nafter {after}")
            else:
                world.settle()

        try:
            run()
        except AssertionError as e:
            return str(e)
        except FlakyFailure as e:
            return "\n".join(str(inner) for inner in e.exceptions)
        return None
