# -*- test-case-name: ross.test.integration.test_fuzz -*-
"""
Random requests for every RPC of ross.v1, built from the proto descriptors.

    rpcs = every_rpc()                                 # [Rpc, ...] of all services
    request = draw(messages(rpc.input, words))         # one random request
    frames = draw(streams(rpc.input, words))           # a client stream

Nothing here knows a message by name: a field's type (and for strings, its
name) decides what goes in it. Values mix the hostile (huge and negative
numbers, unknown enum values, long, empty and odd unicode strings, NUL
bytes, unset messages) with words the daemon knows (C{words}: the names
and IDs of objects that exist), so that requests reach past the first
lookup into the engine. Client streams come with their first frame right,
wrong or missing, frames in any order, and a client that goes away
mid-stream (L{Cut}).
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
from collections import Counter
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence, TypeVar

import attrs
import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from hypothesis import strategies as st

from ross.v1 import (
    container_pb2,
    container_pb2_grpc,
    image_pb2,
    image_pb2_grpc,
    network_pb2,
    network_pb2_grpc,
    snapshot_pb2,
    snapshot_pb2_grpc,
    system_pb2,
    system_pb2_grpc,
    volume_pb2,
    volume_pb2_grpc,
)

MODULES = (system_pb2, container_pb2, image_pb2, snapshot_pb2, volume_pb2, network_pb2)

#: How deep messages nest before nested fields stay unset.
MAX_DEPTH = 4

_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}

#: Strings that have broken parsers elsewhere: paths out of a root, option
#: injection, NULs, separators, lone separators of references, huge ones.
ODD_STRINGS = (
    "", " ", "-", "--", ".", "..", "../../../../etc/passwd", "/", "//", "/proc/self", "/sys", "\0", "a\0b",
    ":", "::", "@", "sha256:", "sha256:" + "0" * 64, "sha256:zz", "busybox:", ":latest", "busybox@",
    "a" * 300, "x" * 70000, "é中🐳", "\u202e\u200b", "\n", "a\nb", "%s%n", "${HOME}", "$(id)", "*", "?",
    "0", "-1", "99999999999999999999", "1e9", "nan", "true", "=", "a=", "=b", "k=v=w", "127.0.0.1:1/x",
    "[::1]:0/x", "UPPER", "name with space", "ctrl-", "ctrl-@,ctrl-[", "none", "tcp", "65536/tcp", "0/udp",
    "1.2.3.4/33", "10.0.0.0/8", "256.0.0.0", "fe80::/10", "host", "bridge", "container:x", "always",
    "on-failure:-1", "SIGKILL", "SIGFOO", "64", "-9", "rw", "ro,Z", "tmpfs", "bind", "volume",
)

# Lone surrogates cannot be encoded: protobuf refuses them client-side.
_ALPHABET = st.characters(exclude_categories=["Cs"])


@attrs.frozen
class Rpc:
    """
    One method of the API.

    @ivar service: the service's short name, e.g. "ContainerService".
    @ivar name: the method's name.
    @ivar input: the request message's descriptor.
    """

    service: str
    name: str
    method: MethodDescriptor

    @property
    def input(self) -> Descriptor:
        return self.method.input_type

    @property
    def client_streaming(self) -> bool:
        return bool(self.method.client_streaming)

    @property
    def server_streaming(self) -> bool:
        return bool(self.method.server_streaming)

    @property
    def path(self) -> str:
        return f"/{self.method.containing_service.full_name}/{self.name}"

    @property
    def ours(self) -> bool:
        """A method of ross.v1 (not of the CRI, say)."""
        return bool(self.method.containing_service.full_name.startswith("ross.v1."))

    def __str__(self) -> str:
        if not self.ours:
            return f"{self.method.containing_service.full_name}.{self.name}"
        return f"{self.service}.{self.name}"


def every_rpc(modules: Sequence[Any] = MODULES) -> list[Rpc]:
    """
    Every method of every service of C{modules} (ross.v1's by default), in
    declaration order.
    """
    found = []
    for module in modules:
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                found.append(Rpc(service.name, method.name, method))
    return found


def message_class(descriptor: Descriptor) -> Any:
    return message_factory.GetMessageClass(descriptor)


@attrs.frozen
class Cut:
    """
    A client stream that ends with the client going away after C{frames}
    (the request iterator fails, so grpc cancels the call).
    """

    frames: tuple[Any, ...]


def integers(field: FieldDescriptor) -> st.SearchStrategy[int]:
    low, high = _INT_RANGES[field.type]
    edges = sorted({v for v in (0, 1, -1, 2, 255, 256, 65535, 65536, 2**31 - 1, -(2**31), 2**32 - 1, 2**63 - 1,
                                -(2**63), 2**64 - 1, 10**9, 10**18) if low <= v <= high})
    return st.one_of(st.sampled_from(edges), st.integers(low, high))


def strings(words: Sequence[str]) -> st.SearchStrategy[str]:
    choices = [st.sampled_from(ODD_STRINGS), st.text(_ALPHABET, max_size=40)]
    if words:
        # Known names first: a request that names a real object goes deeper.
        choices.insert(0, st.sampled_from(list(words)))
        choices.insert(0, st.sampled_from(list(words)))
        # A known name with a twist: a prefix, a suffix, a case change.
        choices.append(st.builds(lambda w, n: w[:n], st.sampled_from(list(words)), st.integers(0, 12)))
        choices.append(st.builds(lambda w, t: w + t, st.sampled_from(list(words)), st.sampled_from(ODD_STRINGS[:20])))
    return st.one_of(*choices)


def blobs(samples: Sequence[bytes]) -> st.SearchStrategy[bytes]:
    choices = [st.binary(max_size=64), st.sampled_from([b"", b"\0" * 512, b"\x1f\x8b\x08" + b"\0" * 20, b"\x03",
                                                        b"\x10", b"\x1b[6n"])]
    if samples:
        # Real archives, whole and cut short: they pass the first checks.
        choices.append(st.sampled_from(list(samples)))
        choices.append(st.builds(lambda b, n: b[:n], st.sampled_from(list(samples)), st.integers(0, 4096)))
    return st.one_of(*choices)


def scalars(field: FieldDescriptor, words: Sequence[str], samples: Sequence[bytes]) -> st.SearchStrategy[Any]:
    t = field.type
    if t == FieldDescriptor.TYPE_STRING:
        return strings(words)
    if t == FieldDescriptor.TYPE_BYTES:
        return blobs(samples)
    if t == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if t in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.floats(allow_nan=True, allow_infinity=True, width=64 if t == FieldDescriptor.TYPE_DOUBLE else 32)
    if t == FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None
        known = [v.number for v in field.enum_type.values]
        # proto3 enums are open: a newer client may send a number this
        # daemon has never heard of.
        return st.one_of(st.sampled_from(known), st.integers(-(2**31), 2**31 - 1))
    return integers(field)


def _set(message: Any, field: FieldDescriptor, value: Any) -> None:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        target = getattr(message, field.name)
        value_field = field.message_type.fields_by_name["value"]
        for k, v in value:
            if value_field.message_type is not None:
                target[k].CopyFrom(v)
            else:
                target[k] = v
    elif field.is_repeated:
        getattr(message, field.name).extend(value)
    elif field.message_type is not None:
        getattr(message, field.name).CopyFrom(value)
    else:
        setattr(message, field.name, value)


def values(field: FieldDescriptor, words: Sequence[str], samples: Sequence[bytes],
           depth: int) -> st.SearchStrategy[Any]:
    """
    What one field may hold (a list for repeated fields, key-value pairs for
    maps).
    """
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        key = field.message_type.fields_by_name["key"]
        value = field.message_type.fields_by_name["value"]
        return st.lists(st.tuples(single(key, words, samples, depth), single(value, words, samples, depth)),
                        max_size=4)
    if field.is_repeated:
        return st.lists(single(field, words, samples, depth), max_size=5)
    return single(field, words, samples, depth)


def single(field: FieldDescriptor, words: Sequence[str], samples: Sequence[bytes],
           depth: int) -> st.SearchStrategy[Any]:
    if field.message_type is not None:
        return messages(field.message_type, words, samples, depth + 1)
    return scalars(field, words, samples)


def messages(descriptor: Descriptor, words: Sequence[str] = (), samples: Sequence[bytes] = (),
             depth: int = 0) -> st.SearchStrategy[Any]:
    """
    Random instances of the message C{descriptor}: each field set or left
    unset; of each oneof, one member or none.
    """
    cls = message_class(descriptor)
    plain = [f for f in descriptor.fields if f.containing_oneof is None]
    groups = [list(o.fields) for o in descriptor.oneofs]

    @st.composite
    def build(draw: Any) -> Any:
        message = cls()
        if depth > MAX_DEPTH:
            return message
        for field in plain:
            if draw(st.booleans()):
                _set(message, field, draw(values(field, words, samples, depth)))
        for members in groups:
            chosen = draw(st.one_of(st.none(), st.sampled_from(members)))
            if chosen is not None:
                _set(message, chosen, draw(values(chosen, words, samples, depth)))
        return message

    return build()


def start_frames(descriptor: Descriptor, words: Sequence[str], samples: Sequence[bytes]) -> st.SearchStrategy[Any]:
    """
    A first frame of a client stream as its RPC wants it: the oneof member
    that comes first in the proto (start, options) set, the rest random.
    """
    cls = message_class(descriptor)
    first = descriptor.oneofs[0].fields[0]
    return st.builds(lambda v: _with(cls(), first, v), single(first, words, samples, 0))


def _with(message: Any, field: FieldDescriptor, value: Any) -> Any:
    _set(message, field, value)
    return message


def streams(descriptor: Descriptor, words: Sequence[str] = (),
            samples: Sequence[bytes] = ()) -> st.SearchStrategy[tuple[Any, ...] | Cut]:
    """
    The frames of a client stream: usually a proper first frame (so the
    rest is read), then random frames in any order; sometimes no start at
    all, or nothing; sometimes cut (L{Cut}) before the end.
    """
    anything = messages(descriptor, words, samples)
    body = st.lists(anything, max_size=5)
    proper = st.builds(lambda s, rest: (s, *rest), start_frames(descriptor, words, samples), body)
    frames = st.one_of(proper, proper, st.builds(tuple, body))
    return st.one_of(frames, frames, st.builds(Cut, frames))


def mutated(seed: Any, words: Sequence[str], samples: Sequence[bytes]) -> st.SearchStrategy[Any]:
    """
    C{seed} (a valid message) with up to three fields, at any depth, given
    random values: requests that pass most checks and break one or two.
    """

    @st.composite
    def build(draw: Any) -> Any:
        message = message_class(seed.DESCRIPTOR)()
        message.CopyFrom(seed)
        for _ in range(draw(st.integers(0, 3))):
            target = message
            while True:
                field = draw(st.sampled_from(list(target.DESCRIPTOR.fields)))
                nested = (field.message_type is not None and not field.is_repeated)
                if nested and draw(st.booleans()):
                    target = getattr(target, field.name)
                    continue
                target.ClearField(field.name)
                _set(target, field, draw(values(field, words, samples, 1)))
                break
        return message

    return build()


def request_of(rpc: Rpc, words: Sequence[str] = (), samples: Sequence[bytes] = (),
               seeds: Sequence[Any] = ()) -> st.SearchStrategy[Any]:
    """
    A request for C{rpc}: one message, or the frames of a client stream.
    With C{seeds} (valid requests: messages, or tuples of frames), two in
    three requests are a seed mutated (L{mutated}); for streams, its first
    frame mutated and random frames mixed into the rest, or cut short.
    """
    if rpc.client_streaming:
        anything = streams(rpc.input, words, samples)
    else:
        anything = messages(rpc.input, words, samples)
    if not seeds:
        return anything
    if not rpc.client_streaming:
        near = st.sampled_from(list(seeds)).flatmap(lambda seed: mutated(seed, words, samples))
        return st.one_of(near, near, anything)

    def near_stream(seed: tuple[Any, ...]) -> st.SearchStrategy[Any]:
        rest = st.lists(st.one_of(st.sampled_from(list(seed[1:]) or [seed[0]]),
                                  messages(rpc.input, words, samples)), max_size=4)
        frames = st.builds(lambda first, more: (first, *more), mutated(seed[0], words, samples),
                           st.one_of(st.just(seed[1:]), rest))
        return st.one_of(frames, frames, st.builds(Cut, frames))

    near = st.sampled_from(list(seeds)).flatmap(near_stream)
    return st.one_of(near, near, anything)


def describe(request: Any) -> str:
    """
    A short, printable account of a request, for failure messages.
    """
    from google.protobuf import text_format

    def one(message: Any) -> str:
        text = text_format.MessageToString(message, as_one_line=True, print_unknown_fields=True)
        return text if len(text) < 2000 else text[:2000] + "..."

    if isinstance(request, Cut):
        return "cut after [" + "; ".join(one(m) for m in request.frames) + "]"
    if isinstance(request, tuple):
        return "[" + "; ".join(one(m) for m in request) + "]"
    return one(request)


def flatten(mapping: Mapping[str, Iterable[str]]) -> list[str]:
    """
    The words of C{mapping} (kind -> names) as one list, without repeats.
    """
    seen: dict[str, None] = {}
    for names in mapping.values():
        for name in names:
            seen.setdefault(name, None)
    return list(seen)


# ---------------------------------------------------------------- the harness

#: Codes that say the request was refused (or could not be served) on
#: purpose; INTERNAL and UNKNOWN are bugs.
BUG_CODES = frozenset({grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN})
#: Codes after which the daemon may still be finishing or undoing the work.
UNSETTLED_CODES = frozenset({grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED})

#: Responses read from a server stream before the client hangs up.
MAX_RESPONSES = 64

FIXTURE_RUNNING = "fz-run"
FIXTURE_CREATED = "fz-made"
FIXTURE_VOLUME = "fz-vol"
FIXTURE_NETWORK = "fz-net"
FIXTURE_SNAPSHOT = "fz-snap"
FIXTURE_IMAGE = "busybox:latest"

#: Words every request may use besides the daemon's objects: commands
#: that exist in busybox and do nothing harmful, paths, formats, drivers.
COMMON_WORDS = (
    "busybox", "true", "false", "cat", "sleep", "ls", "/", "/tmp", "/etc/hostname", "/bin/sh", "root", "0:0",
    "json", "docker-archive", "oci-archive", "local", "bridge", "none", "json-file", "name", "label", "status",
    "id", "dangling", "before", "since", "ancestor", "exited", "running", "container", "image", "volume",
    "network", "snapshot", "daemon", "create", "start", "die", "kind", "parent",
)


#: Valid requests to mutate, in protobuf text format: C{$NAME} stands for
#: a fixture's name or ID (L{World.seeds}); a client stream is a list of
#: frames, where C{DATA n} is a data frame carrying sample archive n.
SEEDS: dict[str, list[Any]] = {
    "SystemService.Events": ['types: "container" actions: "create" since { seconds: $since }'],
    "SystemService.Prune": ["all: true volumes: true"],
    "ContainerService.CreateContainer": [
        'name: "fz-new" config { image: "$image" cmd { values: "true" } labels { key: "a" value: "b" } }'
        ' host_config { network_mode: "none" binds: "$volume:/data" restart_policy { name: "no" } }'],
    "ContainerService.StartContainer": ['container_id: "$made"'],
    "ContainerService.StopContainer": ['container_id: "$run" timeout: 1'],
    "ContainerService.RestartContainer": ['container_id: "$run" timeout: 0'],
    "ContainerService.KillContainer": ['container_id: "$run" signal: "SIGUSR1"'],
    "ContainerService.PauseContainer": ['container_id: "$run"'],
    "ContainerService.UnpauseContainer": ['container_id: "$run"'],
    "ContainerService.RemoveContainer": ['container_id: "$made"'],
    "ContainerService.RenameContainer": ['container_id: "$made" new_name: "fz-renamed"'],
    "ContainerService.ListContainers": ['all: true filters { key: "name" value: "fz" } limit: 5'],
    "ContainerService.InspectContainer": ['container_id: "$run" size: true'],
    "ContainerService.GetLogs": ['container_id: "$run" stdout: true stderr: true tail: 5 timestamps: true'],
    "ContainerService.Wait": ['container_id: "$made" condition: WAIT_CONDITION_NOT_RUNNING'],
    "ContainerService.RunInteractive": [[
        'start { create { config { image: "$image" cmd { values: "cat" } open_stdin: true }'
        ' host_config { network_mode: "none" auto_remove: true } } attach_stdin: true }',
        'stdin: "hello"', 'resize { rows: 24 cols: 80 }', "close_stdin: true"]],
    "ContainerService.Attach": [[
        'start { container_id: "$run" attach_stdin: true replay: true }', 'stdin: "x"',
        'resize { rows: 30 cols: 100 }']],
    "ContainerService.Exec": [[
        'start { container_id: "$run" cmd: "cat" attach_stdin: true env: "A=1" working_dir: "/tmp" }',
        'stdin: "hello"', "close_stdin: true"]],
    "ContainerService.InspectExec": ['exec_id: "$exec"'],
    "ContainerService.Resize": ['container_id: "$run" size { rows: 24 cols: 80 }'],
    "ContainerService.Top": ['container_id: "$run" ps_args: "-o pid,comm"'],
    "ContainerService.Stats": ['container_id: "$run"'],
    "ContainerService.Export": ['container_id: "$made"'],
    "ContainerService.Commit": ['container_id: "$made" reference: "fz-commit:1" changes: "ENV A=1"'],
    "ContainerService.CopyTo": [['options { container_id: "$run" path: "/tmp" }', "DATA 0"]],
    "ContainerService.CopyToDirect": ['container_id: "$run" path: "/tmp"'],
    "ContainerService.CopyFrom": ['container_id: "$run" path: "/etc/hostname"',
                                  'container_id: "$run" path: "/etc/hostname" direct: true'],
    "ContainerService.Diff": ['container_id: "$run"'],
    "ContainerService.PruneContainers": ['filters { key: "label" value: "a=b" }'],
    "ImageService.ListImages": ['all: true filters { key: "reference" value: "busy*" }'],
    "ImageService.InspectImage": ['name: "$image"'],
    "ImageService.PullImage": ['image_name: "127.0.0.1:1/fz" tag: "1"'],
    "ImageService.PushImage": ['image_name: "$image"'],
    "ImageService.BuildImage": [['options { tags: "fz-built:1" dockerfile_content: "FROM $image\\nCMD [\\"true\\"]" }',
                                "DATA 0"]],
    "ImageService.RemoveImage": ['name: "fz-small:1"'],
    "ImageService.TagImage": ['source: "$image" target: "fz-tag:1"'],
    "ImageService.ImageHistory": ['name: "$image"'],
    "ImageService.ImportImage": [['options { reference: "fz-imp:1" changes: "CMD [\\"sh\\"]" }', "DATA 0"]],
    "ImageService.LoadImages": [["options { quiet: true }", "DATA 2"]],
    "ImageService.LoadImagesDirect": ["quiet: true"],
    "ImageService.ImportImageDirect": ['reference: "fz-imp:2" changes: "CMD [\\"sh\\"]"'],
    "ImageService.SaveImages": ['names: "$image" format: "oci-archive"'],
    "ImageService.PruneImages": ['all: true'],
    "ImageService.Login": ['auth { username: "u" password: "p" server_address: "127.0.0.1:1" }'],
    "ImageService.Logout": ['server_address: "127.0.0.1:1"'],
    "SnapshotterService.Prepare": ['key: "fz-new" parent: "$parent" labels { key: "a" value: "b" }'],
    "SnapshotterService.View": ['key: "fz-view" parent: "$parent"'],
    "SnapshotterService.Commit": ['name: "fz-committed" key: "$snapshot"'],
    "SnapshotterService.Remove": ['key: "$snapshot"'],
    "SnapshotterService.Stat": ['key: "$snapshot"'],
    "SnapshotterService.List": ['filters: "kind==active"'],
    "SnapshotterService.Mounts": ['key: "$snapshot"'],
    "SnapshotterService.Usage": ['key: "$parent"'],
    "SnapshotterService.ExtractLayer": ['key: "$snapshot" layer { digest: "$layer" }'],
    "SnapshotterService.Diff": ['key: "$snapshot"'],
    "VolumeService.CreateVolume": ['name: "fz-new" labels { key: "a" value: "b" } driver: "local"'],
    "VolumeService.InspectVolume": ['name: "$volume"'],
    "VolumeService.RemoveVolume": ['name: "$volume"'],
    "VolumeService.ListVolumes": ['filters { key: "dangling" value: "true" }'],
    "VolumeService.PruneVolumes": ['all: true'],
    "NetworkService.CreateNetwork": ['name: "fz-new" subnet: "10.77.0.0/24" labels { key: "a" value: "b" }'],
    "NetworkService.RemoveNetwork": ['network: "$network"'],
    "NetworkService.InspectNetwork": ['network: "$network"'],
    "NetworkService.ListNetworks": ['filters { key: "type" value: "custom" }'],
    "NetworkService.Connect": ['network: "$network" container: "$made" aliases: "fz"'],
    "NetworkService.Disconnect": ['network: "$network" container: "$made"'],
}


def parse_seed(rpc: Rpc, seed: Any, names: Mapping[str, str], samples: Sequence[bytes]) -> Any:
    """
    One entry of L{SEEDS} as a message (or frames), C{names} filled in.
    """
    from string import Template

    from google.protobuf import text_format

    cls = message_class(rpc.input)

    def frame(text: str) -> Any:
        if text.startswith("DATA "):
            message = cls()
            data = rpc.input.oneofs[0].fields[1]
            setattr(message, data.name, samples[int(text[5:])])
            return message
        return text_format.Parse(Template(text).substitute(names), cls())

    if isinstance(seed, list):
        return tuple(frame(text) for text in seed)
    return frame(seed)


@attrs.define
class Outcome:
    """
    How a call ended: C{code} (OK or the error) and how many responses
    came before.
    """

    code: grpc.StatusCode
    details: str
    responses: int

    @property
    def refused(self) -> bool:
        return self.code != grpc.StatusCode.OK and self.code not in UNSETTLED_CODES and not self.responses


def _iterate(frames: tuple[Any, ...], cut: bool) -> Iterator[Any]:
    yield from frames
    if cut:
        # grpc cancels a call whose request iterator fails: the client
        # is gone mid-stream.
        raise _ClientGone()


class _ClientGone(Exception):
    pass


def invoke(channel: grpc.Channel, rpc: Rpc, request: Any, timeout: float) -> Outcome:
    """
    Call C{rpc} once with C{request} (a message, or client-stream frames,
    or a L{Cut}), reading at most L{MAX_RESPONSES} responses, all within
    C{timeout} seconds.
    """
    serialize = message_class(rpc.input).SerializeToString
    deserialize = message_class(rpc.method.output_type).FromString
    cut = isinstance(request, Cut)
    if rpc.client_streaming:
        frames = request.frames if isinstance(request, Cut) else request
        payload: Any = _iterate(frames, cut)
    else:
        payload = request
    kind: dict[tuple[bool, bool], Any] = {(False, False): channel.unary_unary, (False, True): channel.unary_stream,
            (True, False): channel.stream_unary, (True, True): channel.stream_stream}
    fn = kind[(rpc.client_streaming, rpc.server_streaming)](
        rpc.path, request_serializer=serialize, response_deserializer=deserialize)
    responses = 0
    try:
        if not rpc.server_streaming:
            fn(payload, timeout=timeout)
            return Outcome(grpc.StatusCode.OK, "", 1)
        call = fn(payload, timeout=timeout)
        try:
            for _ in call:
                responses += 1
                if responses >= MAX_RESPONSES:
                    call.cancel()
                    return Outcome(grpc.StatusCode.CANCELLED, "the client stopped reading", responses)
        finally:
            call.cancel()
        return Outcome(grpc.StatusCode.OK, "", responses)
    except grpc.RpcError as e:
        if cut and e.code() == grpc.StatusCode.UNKNOWN and e.details() == "Exception iterating requests!":
            # grpc's own word for "the client cancelled while sending".
            return Outcome(grpc.StatusCode.CANCELLED, "cut", responses)
        return Outcome(e.code(), e.details() or "", responses)


class LoopbackOnly:
    """
    A named network namespace with nothing but a loopback device, for a
    daemon whose random requests must reach nothing beyond this machine
    (a pull from a random registry, say):
    C{DaemonProcess(netns=LoopbackOnly().create())}.
    """

    def __init__(self) -> None:
        self.name = f"rossf{os.urandom(3).hex()}"

    def create(self) -> str:
        subprocess.run(["ip", "netns", "add", self.name], check=True, capture_output=True, timeout=30)
        subprocess.run(["ip", "-n", self.name, "link", "set", "lo", "up"], check=True, capture_output=True,
                       timeout=30)
        return self.name

    def destroy(self) -> None:
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=30)


@attrs.define
class SideClient:
    """
    Another client of the daemon, asking Ping and ListContainers in a loop
    while the fuzzing goes on: every call must be answered.
    """

    channel: grpc.Channel
    answered: int = 0
    failures: list[str] = attrs.field(factory=list)
    _stop: threading.Event = attrs.field(factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> SideClient:
        self._thread = threading.Thread(target=self._run, name="ross-fuzz-side-client", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        system = system_pb2_grpc.SystemServiceStub(self.channel)
        containers = container_pb2_grpc.ContainerServiceStub(self.channel)
        while not self._stop.wait(0.05):
            try:
                system.Ping(system_pb2.PingRequest(), timeout=15)
                containers.ListContainers(container_pb2.ListContainersRequest(all=True), timeout=15)
                self.answered += 1
            except grpc.RpcError as e:
                self.failures.append(f"{e.code().name}: {e.details()}")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)


class World:
    """
    A real daemon (a L{ross.testing.daemon.DaemonProcess} in a
    L{LoopbackOnly} network namespace) with known objects in it, and the checks made around
    every fuzzed call. Blocking: use it from a thread.
    """

    def __init__(self, daemon: Any, base: Path) -> None:
        self.daemon = daemon
        self.base = base
        self.channel = grpc.insecure_channel(f"unix:{daemon.socket}")
        self.system = system_pb2_grpc.SystemServiceStub(self.channel)
        self.containers = container_pb2_grpc.ContainerServiceStub(self.channel)
        self.images = image_pb2_grpc.ImageServiceStub(self.channel)
        self.snapshots = snapshot_pb2_grpc.SnapshotterServiceStub(self.channel)
        self.volumes = volume_pb2_grpc.VolumeServiceStub(self.channel)
        self.networks = network_pb2_grpc.NetworkServiceStub(self.channel)
        self.fixtures: dict[str, str] = {}
        #: What C{$NAME} stands for in L{SEEDS}.
        self.names: dict[str, str] = {}
        self.words: list[str] = []
        self.samples: list[bytes] = []
        #: RPC -> status code name -> how many calls ended so.
        self.outcomes: dict[str, Counter[str]] = {}
        self._log_offset = 0

    def close(self) -> None:
        self.channel.close()

    # -- objects the requests may name

    def prepare(self) -> None:
        """
        Once: the archives requests may carry.
        """
        from ross.testing.images import docker_archive, layer_tar

        small = self.base / "small"
        small.mkdir(exist_ok=True)
        (small / "hello").write_text("hello\n")
        layer = layer_tar(small)
        archive = docker_archive(self.base / "small.tar", tags=["fz-small:1"], layers=[layer])
        self.samples = [layer, gzip.compress(layer, mtime=0), archive.path.read_bytes()]

    def ensure(self) -> None:
        """
        Bring back the known objects an earlier request removed, stopped or
        renamed, and learn their names and IDs (the words of requests).
        """
        from ross.testing.images import docker_archive, load_archive

        t = 60
        images = self.images.ListImages(image_pb2.ListImagesRequest(all=True), timeout=t).images
        if not any(FIXTURE_IMAGE in i.repo_tags for i in images):
            built = docker_archive(self.base / "busybox.tar")
            load_archive(self._clients(), built.path)
        wanted = {FIXTURE_RUNNING: True, FIXTURE_CREATED: False}
        listed = {c.name: c for c in self.containers.ListContainers(
            container_pb2.ListContainersRequest(all=True), timeout=t).containers}
        for name, running in wanted.items():
            found = listed.get(name)
            is_running = found is not None and found.state.status == container_pb2.CONTAINER_STATUS_RUNNING
            if found is not None and (running == is_running) and not (found.state.status
                                                                      == container_pb2.CONTAINER_STATUS_PAUSED):
                continue
            if found is not None:
                self.containers.RemoveContainer(container_pb2.RemoveContainerRequest(
                    container_id=found.id, force=True), timeout=t)
            config = container_pb2.ContainerConfig(image=FIXTURE_IMAGE, open_stdin=True)
            config.cmd.values.extend(["sleep", "100000"] if running else ["true"])
            made = self.containers.CreateContainer(container_pb2.CreateContainerRequest(
                name=name, config=config, host_config=container_pb2.HostConfig(network_mode="none")), timeout=t)
            if running:
                self.containers.StartContainer(container_pb2.StartContainerRequest(container_id=made.id), timeout=t)
        volumes = {v.name for v in self.volumes.ListVolumes(volume_pb2.ListVolumesRequest(), timeout=t).volumes}
        if FIXTURE_VOLUME not in volumes:
            self.volumes.CreateVolume(volume_pb2.CreateVolumeRequest(name=FIXTURE_VOLUME), timeout=t)
        networks = {n.name for n in self.networks.ListNetworks(network_pb2.ListNetworksRequest(), timeout=t).networks}
        if FIXTURE_NETWORK not in networks:
            self.networks.CreateNetwork(network_pb2.CreateNetworkRequest(name=FIXTURE_NETWORK), timeout=t)
        keys = {s.name for s in self.snapshots.List(snapshot_pb2.ListSnapshotsRequest(), timeout=t).info}
        if FIXTURE_SNAPSHOT not in keys:
            self.snapshots.Prepare(snapshot_pb2.PrepareSnapshotRequest(key=FIXTURE_SNAPSHOT), timeout=t)
        self.words = self._learn_words()

    def seeds(self, rpc: Rpc) -> list[Any]:
        """
        The valid requests of L{SEEDS} for C{rpc}, naming this world's
        objects.
        """
        if not rpc.ours:
            return []
        return [parse_seed(rpc, seed, self.names, self.samples) for seed in SEEDS.get(str(rpc), [])]

    def _clients(self) -> Any:
        from ross.testing.daemon import Clients

        return Clients(self.channel)

    def _learn_words(self) -> list[str]:
        t = 60
        found: dict[str, list[str]] = {"common": list(COMMON_WORDS)}
        containers = self.containers.ListContainers(container_pb2.ListContainersRequest(all=True), timeout=t).containers
        found["containers"] = [w for c in containers for w in (c.name, c.id, c.id[:12])]
        self.fixtures = {c.name: c.id for c in containers}
        execs = [e for c in containers for e in self.containers.InspectContainer(
            container_pb2.InspectContainerRequest(container_id=c.id), timeout=t).container.exec_ids]
        found["execs"] = execs[-4:]
        images = self.images.ListImages(image_pb2.ListImagesRequest(all=True), timeout=t).images
        found["images"] = [w for i in images for w in (i.id, i.id[7:19], *i.repo_tags, *i.repo_digests)]
        for image in images[:2]:
            inspected = self.images.InspectImage(image_pb2.InspectImageRequest(name=image.id), timeout=t)
            found["layers"] = [*inspected.diff_ids, inspected.chain_id, image.target.digest]
        found["volumes"] = [v.name for v in self.volumes.ListVolumes(volume_pb2.ListVolumesRequest(),
                                                                        timeout=t).volumes][:6]
        networks = self.networks.ListNetworks(network_pb2.ListNetworksRequest(), timeout=t).networks
        found["networks"] = [w for n in networks[:6] for w in (n.name, n.id[:12])]
        snapshots = self.snapshots.List(snapshot_pb2.ListSnapshotsRequest(), timeout=t).info
        found["snapshots"] = [s.name for s in snapshots][:8]
        busybox = self.images.InspectImage(image_pb2.InspectImageRequest(name=FIXTURE_IMAGE), timeout=t)
        self.names = {
            "run": self.fixtures[FIXTURE_RUNNING], "made": self.fixtures[FIXTURE_CREATED], "image": FIXTURE_IMAGE,
            "volume": FIXTURE_VOLUME, "network": FIXTURE_NETWORK, "snapshot": FIXTURE_SNAPSHOT,
            "parent": busybox.chain_id, "layer": json.loads(busybox.manifest_json)["layers"][0]["digest"],
            "exec": (execs or ["none"])[-1], "since": str(int(time.time()) - 60),
        }
        found["layers"].append(self.names["layer"])
        return flatten(found)

    # -- checks

    def state(self) -> tuple[Any, ...]:
        """
        What a refused request must leave as it was: the objects of every
        kind, and the state of each container.
        """
        t = 30
        containers = sorted((c.id, c.name, c.state.status, c.image_id) for c in self.containers.ListContainers(
            container_pb2.ListContainersRequest(all=True), timeout=t).containers)
        images = sorted((i.id, tuple(sorted(i.repo_tags))) for i in self.images.ListImages(
            image_pb2.ListImagesRequest(all=True), timeout=t).images)
        volumes = sorted((v.name, tuple(sorted(v.labels.items()))) for v in self.volumes.ListVolumes(
            volume_pb2.ListVolumesRequest(), timeout=t).volumes)
        networks = sorted((n.id, n.name, tuple(sorted(c.container_id for c in n.containers)))
                          for n in self.networks.ListNetworks(network_pb2.ListNetworksRequest(), timeout=t).networks)
        snapshots = sorted((s.name, s.parent, s.kind) for s in self.snapshots.List(
            snapshot_pb2.ListSnapshotsRequest(), timeout=t).info)
        return (containers, images, volumes, networks, snapshots)

    def settle(self, keep: Sequence[str] = (FIXTURE_RUNNING, FIXTURE_CREATED)) -> None:
        """
        After a request that was served (or cut off): remove the containers
        it may have made (they could exit, restart or remove themselves
        later and look like a change made by the next request), then wait
        until nothing moves. Before the daemon stops, with nothing to
        C{keep}: its containers would outlive it.
        """
        t = 60
        for c in self.containers.ListContainers(container_pb2.ListContainersRequest(all=True), timeout=t).containers:
            if c.name not in keep:
                try:
                    self.containers.RemoveContainer(container_pb2.RemoveContainerRequest(
                        container_id=c.id, force=True, remove_volumes=True), timeout=t)
                except grpc.RpcError as e:
                    if e.code() != grpc.StatusCode.NOT_FOUND:
                        raise
        previous = self.state()
        for _ in range(50):
            time.sleep(0.1)
            current = self.state()
            if current == previous:
                return
            previous = current

    def new_log(self) -> str:
        """
        What the daemon logged since the last call.
        """
        with open(self.daemon.log, "rb") as f:
            f.seek(self._log_offset)
            data = f.read()
        self._log_offset += len(data)
        return data.decode(errors="replace")

    def check(self, rpc: Rpc, request: Any, timeout: float, channel: grpc.Channel | None = None) -> Outcome:
        """
        Call C{rpc} with C{request} (on C{channel}, the API's by default)
        and assert what must hold of any request: no INTERNAL or UNKNOWN,
        an error that says something, the daemon alive with nothing
        unexpected in its log, and a refused request changing nothing.
        """
        before = self.state()
        outcome = invoke(channel or self.channel, rpc, request, timeout)
        self.outcomes.setdefault(str(rpc), Counter())[outcome.code.name] += 1
        what = f"{rpc} with {describe(request)}"
        log = self.new_log()
        if self.daemon.process.poll() is not None:
            raise AssertionError(f"{what}: the daemon died ({self.daemon.process.returncode}):\n{log[-6000:]}")
        if outcome.code in BUG_CODES:
            raise AssertionError(f"{what}: {outcome.code.name} ({outcome.details})")
        if outcome.code != grpc.StatusCode.OK and not outcome.details.strip():
            raise AssertionError(f"{what}: {outcome.code.name} without a message")
        if "Traceback" in log or "Unhandled" in log:
            raise AssertionError(f"{what}: {outcome.code.name}, and the daemon logged:\n{log[-6000:]}")
        if outcome.refused:
            after = self.state()
            if after != before:
                raise AssertionError(f"{what}: refused with {outcome.code.name} ({outcome.details}) "
                                     f"but the state changed:\n{_difference(before, after)}")
        else:
            self.settle()
        return outcome


def _difference(before: tuple[Any, ...], after: tuple[Any, ...]) -> str:
    lines = []
    for kind, old, new in zip(("containers", "images", "volumes", "networks", "snapshots"), before, after):
        gone = [x for x in old if x not in new]
        came = [x for x in new if x not in old]
        if gone or came:
            lines.append(f"{kind}: gone {gone}, new {came}")
    return "\n".join(lines)


Target = TypeVar("Target")


def fuzz_each(daemon: Any, targets: Sequence[Target], fuzz_one: Callable[[World, Target], str | None],
              name: Callable[[Target], str]) -> list[str]:
    """
    Start C{daemon} (a L{ross.testing.daemon.DaemonProcess}), make its
    L{World} and fuzz each target with C{fuzz_one} (a failure's text, or
    None), the known objects brought back after each and a L{SideClient}
    asking meanwhile; then remove everything, stop the daemon and check no
    process of its outlives it. Blocking. Returns the failures.
    """
    from twisted.python import log

    from ross.testing.leaks import processes_mentioning

    daemon.start()
    world = World(daemon, daemon.base)
    side = SideClient(world.channel)
    failures = []
    try:
        world.prepare()
        world.ensure()
        world.new_log()
        side.start()
        for target in targets:
            failure = fuzz_one(world, target)
            if failure:
                failures.append(failure)
            world.ensure()
            if side.failures:
                failures.append(f"while fuzzing {name(target)}, another client was refused: {side.failures[:3]}")
                side.failures.clear()
        side.stop()
        if side.failures or not side.answered:
            failures.append(f"the other client: {side.answered} answers, failures {side.failures[:3]}")
        for what, codes in world.outcomes.items():
            log.msg(f"fuzzed {what}: {sum(codes.values())} calls, {dict(codes)}")
    finally:
        side.stop()
        world.settle(keep=())
        world.close()
        daemon.stop()
    # No shim outlives the daemon's containers (the spare one leaves once
    # the daemon has gone).
    deadline = time.monotonic() + 15
    while processes_mentioning(str(daemon.base)) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = processes_mentioning(str(daemon.base))
    if left:
        failures.append(f"processes outlived the daemon: {left}")
    return failures
