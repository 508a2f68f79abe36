"""
Tests for L{ross.engine.runtime.wire} and the shim's check of it
(L{ross.engine.runtime.shim.check}): the schema the shim checks is the
types mypy checks both ends against, and what L{to_wire} builds passes it
while a wrong type, an unknown or a missing field anywhere in it does not.
No root needed.
"""

from __future__ import annotations

import copy
import marshal
import types
import typing
from typing import Iterator, Literal, Union

from twisted.trial.unittest import SynchronousTestCase

from ross.engine.records import Mount
from ross.engine.runtime import shim, wire
from ross.engine.runtime import spec as rs
from ross.engine.runtime.seccomp import Program
from ross.engine.runtime.userns import IdRange


def schema_of(hint: object) -> object:
    """
    The shim's wire type (L{shim.SPEC}'s vocabulary) for a type of
    L{ross.engine.runtime.wire}.
    """
    if hint in (str, int, bool, bytes):
        return hint
    if typing.is_typeddict(hint):
        assert isinstance(hint, type)
        fields = {name: schema_of(field) for name, field in typing.get_type_hints(hint).items()}
        # A Record is all required or all optional.
        assert hint.__required_keys__ in (frozenset(fields), frozenset())  # type: ignore[attr-defined]
        return shim.Record(fields, total=bool(hint.__required_keys__))  # type: ignore[attr-defined]
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is list:
        return [schema_of(args[0])]
    if origin is tuple:
        return tuple(schema_of(a) for a in args)
    if origin is Literal:
        # The tag of a Tagged union: the union checks its value.
        return str
    if origin in (Union, types.UnionType):
        if type(None) in args:
            (rest,) = [a for a in args if a is not type(None)]
            return shim.Nullable(schema_of(rest))
        choices: dict[str, shim.Record] = {}
        tags = set()
        for member in args:
            hints = typing.get_type_hints(member)
            (tag,) = [name for name, h in hints.items() if typing.get_origin(h) is Literal]
            tags.add(tag)
            (value,) = typing.get_args(hints[tag])
            record = schema_of(member)
            assert isinstance(record, shim.Record)
            choices[value] = record
        (tag,) = tags
        return shim.Tagged(tag, choices)
    raise AssertionError(f"no wire type for {hint!r}")


def realistic() -> rs.ContainerSpec:
    """A container with a bit of everything the wire form carries."""
    return rs.ContainerSpec(
        id="0123456789abcdef",
        rootfs=(Mount("overlay", "overlay", "", ("lowerdir=/l1:/l2", "upperdir=/u", "workdir=/w")),
                Mount("bind", "/host/extra", "/extra", ("rbind", "ro"))),
        process=rs.Process(args=("sh", "-c", "echo hi"), env=("A=1",), cwd="/srv", user="app:app",
                           additional_gids=("audio",), tty=True, open_stdin=True, console_size=(40, 120)),
        hostname="web", domainname="example.org", resolv_conf="nameserver 10.0.0.2\n",
        mounts=(rs.BindMount("/data", "/data", readonly=True, propagation="rslave"),
                rs.TmpfsMount("/run", size=1 << 20, mode=0o755, options=("noexec",))),
        network="/proc/1/ns/net", ipc="/proc/1/ns/ipc", uts="", pid="", oom_score_adj=500,
        resources=rs.Resources(memory=64 << 20, memory_swap=-1, nano_cpus=500_000_000, cpu_shares=512,
                               pids_limit=100, cpuset_cpus="0-1", cpuset_mems="0",
                               hugepage_limits=(("2MB", 4 << 20),)),
        cap_add=("CAP_NET_ADMIN",), cap_drop=("CAP_MKNOD",), init=True,
        log=rs.LogConfig("/var/log/c.log", max_size=1 << 20, max_files=3),
        userns=rs.UserNamespace(uid_map=(IdRange(0, 100000, 65536),), gid_map=(IdRange(0, 100000, 65536),)),
        sysctls=(("net.ipv4.ip_forward", "1"),),
    )


def parts(value: object, where: str = "spec") -> Iterator[tuple[str, list[object], object]]:
    """
    Every part of a wire value, nested ones too: its path as the shim
    names it, the keys and indexes that lead to it, the part.
    """
    yield where, [], value
    if isinstance(value, dict):
        for key, item in value.items():
            for path, steps, part in parts(item, f"{where}.{key}"):
                yield path, [key, *steps], part
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            for path, steps, part in parts(item, f"{where}[{i}]"):
                yield path, [i, *steps], part


def replaced(value: object, steps: list[object], new: object) -> object:
    """A copy of C{value} with the part at C{steps} C{new}."""
    if not steps:
        return new
    copied = copy.deepcopy(value)
    parent = copied
    for step in steps[:-1]:
        parent = parent[step]  # type: ignore[index]
    if isinstance(parent, tuple):
        items = list(parent)
        items[typing.cast(int, steps[-1])] = new
        return replaced(copied, steps[:-1], tuple(items))
    parent[steps[-1]] = new  # type: ignore[index]
    return copied


def wrong(value: object) -> object:
    """A value of another wire type than C{value}'s (an int for a bool and the other way)."""
    for kind, other in ((bool, 1), (int, True), (str, b"x"), (bytes, "x"), (dict, ["x"]), (list, {}),
                        (tuple, "x"), (type(None), 0)):
        if isinstance(value, kind):
            return other
    raise AssertionError(f"not wire data: {value!r}")


class SchemaTests(SynchronousTestCase):
    def test_schema_is_the_types(self) -> None:
        """
        The shim checks every field of the wire form's types, each for its
        type: a field added to L{ross.engine.runtime.wire} without its
        check (or the other way) fails here.
        """
        self.assertEqual(schema_of(wire.Spec), shim.SPEC)
        self.assertEqual(schema_of(wire.ExecProcess), shim.EXEC_PROCESS)
        self.assertEqual(schema_of(wire.Resources), shim.RESOURCES)

    def test_a_new_field_is_noticed(self) -> None:
        """
        The comparison above sees a field the schema lacks, and a field of
        another type.
        """
        class Grown(wire.ExecProcess):
            nice: int

        self.assertNotEqual(schema_of(Grown), shim.EXEC_PROCESS)
        self.assertNotEqual(shim.Record({"join": str}), shim.Record({"join": int}))
        self.assertNotEqual(shim.Record({"join": str}), shim.Record({"join": str}, total=False))


class CheckTests(SynchronousTestCase):
    def setUp(self) -> None:
        program = Program(code=b"\x06\x00\x00\x00\x00\x00\xff\x7f", flags=0)
        self.wire = rs.to_wire(realistic(), program)

    def test_to_wire_passes(self) -> None:
        """
        What to_wire builds, as the shim receives it (through marshal),
        passes the check: a realistic spec, a privileged one without
        filter, user namespace or resolv.conf, and an exec process.
        """
        plain = rs.to_wire(rs.ContainerSpec(id="abc", rootfs=(Mount("bind", "/r", "", ("rbind",)),),
                                            process=rs.Process(args=("true",)), privileged=True))
        self.assertIsNone(plain["userns"])
        self.assertIsNone(plain["process"]["seccomp"])
        for spec in (self.wire, plain):
            shim.check(marshal.loads(marshal.dumps(dict(spec))), shim.SPEC, "spec")
        process = rs.exec_to_wire(rs.ExecProcess(args=("ls",), env=("B=2",), tty=True, privileged=True))
        shim.check(marshal.loads(marshal.dumps(dict(process))), shim.EXEC_PROCESS, "process")

    def test_wrong_type_anywhere(self) -> None:
        """
        A part of any other type, at any depth, is refused with a
        ValueError that names where it is.
        """
        checked = 0
        for path, steps, part in parts(self.wire):
            if not steps:
                continue
            with self.assertRaises(ValueError, msg=path) as cm:
                shim.check(replaced(self.wire, steps, wrong(part)), shim.SPEC, "spec")
            self.assertTrue(str(cm.exception).startswith(path), (path, str(cm.exception)))
            self.assertIn("expected", str(cm.exception))
            checked += 1
        # Every level: the process, its filter, mounts, resources' pairs, user namespace maps.
        self.assertGreater(checked, 100)

    def test_unknown_or_missing_field_anywhere(self) -> None:
        """
        A field the wire form does not have, in any of its dicts, is
        refused naming it; so is a field missing, but from resources
        (whose fields an update sends only when they change).
        """
        dicts = [(path, steps, part) for path, steps, part in parts(self.wire) if isinstance(part, dict)]
        self.assertEqual({path for path, _, _ in dicts},
                         {"spec", "spec.process", "spec.process.seccomp", "spec.rootfs[0]", "spec.rootfs[1]",
                          "spec.mounts[0]", "spec.mounts[1]", "spec.resources", "spec.log", "spec.userns"})
        for path, steps, part in dicts:
            with self.assertRaises(ValueError) as cm:
                shim.check(replaced(self.wire, steps, {**part, "bogus": 1}), shim.SPEC, "spec")
            self.assertEqual(str(cm.exception), f"{path}: unknown field 'bogus'")
            first = next(iter(part))
            missing = replaced(self.wire, steps, {k: v for k, v in part.items() if k != first})
            if path == "spec.resources":
                shim.check(missing, shim.SPEC, "spec")
            else:
                with self.assertRaises(ValueError) as cm:
                    shim.check(missing, shim.SPEC, "spec")
                self.assertIn(path, str(cm.exception))

    def test_messages(self) -> None:
        """
        The refusal says where, what was expected and what came.
        """
        cases: list[tuple[list[object], object, str]] = [
            (["mounts", 1, "size"], "1M", "spec.mounts[1].size: expected int, got str"),
            (["mounts", 0, "type"], "nfs", "spec.mounts[0].type: expected one of bind, tmpfs, got 'nfs'"),
            (["process", "tty"], 1, "spec.process.tty: expected bool, got int"),
            (["resources", "hugepage_limits", 0], ["2MB"], "spec.resources.hugepage_limits[0]: expected 2 items, "
                                                           "got ['2MB']"),
            (["userns"], "host", "spec.userns: expected a dict, got str"),
        ]
        for steps, new, message in cases:
            with self.assertRaises(ValueError) as cm:
                shim.check(replaced(self.wire, steps, new), shim.SPEC, "spec")
            self.assertEqual(str(cm.exception), message)

    def test_update_resources(self) -> None:
        """
        An update's resources may leave fields out but not give others,
        nor a bool for a limit.
        """
        shim.check({"memory": 1 << 30, "hugepage_limits": [["2MB", 0]]}, shim.RESOURCES, "resources")
        for bad, message in (({"memory": True}, "resources.memory: expected int, got bool"),
                             ({"swap": 1}, "resources: unknown field 'swap'"),
                             (None, "resources: expected a dict, got NoneType")):
            with self.assertRaises(ValueError) as cm:
                shim.check(bad, shim.RESOURCES, "resources")
            self.assertEqual(str(cm.exception), message)
