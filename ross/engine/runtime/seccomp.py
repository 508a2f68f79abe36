# -*- test-case-name: ross.test.test_seccomp -*-
"""
Seccomp profiles in docker's JSON format, compiled to classic BPF in the
daemon.

L{parse} reads a profile as docker does (C{--security-opt seccomp=FILE}
sends the file's JSON) and refuses a malformed one with InvalidArgument
naming the problem. The builtin profile, C{seccomp_default.json} next to
this module, allows what docker's default profile (moby
profiles/seccomp/default.json) allows, and errno EPERM for everything
else: never keyrings, userfaultfd or kexec; namespaces, mounts, bpf, perf
or modules only with the capability that unlocks them.

A profile's rules may depend on the container's capabilities, the
architecture and the kernel (docker's C{includes} and C{excludes});
L{applies} decides which rules hold for one container, L{compile_profile}
builds the filter with libseccomp (through ctypes, blocking, ~20 ms for
the builtin profile) and L{SeccompCompiler} does that in a thread once per
(profile, capability set, architecture), so the shim, which stays
stdlib-only, receives a ready program and only loads it
(L{ross.engine.runtime.linux.seccomp_filter}).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import importlib.resources
import json
import os
import platform
import threading
from collections import OrderedDict
from typing import Any

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure

from ross import errors
from ross.engine.runtime import linux

# libseccomp's action values (seccomp.h); ERRNO and TRACE carry a 16-bit
# value. SCMP_ACT_NOTIFY needs a listener Ross does not provide.
ACTIONS = {
    "SCMP_ACT_KILL": 0x00000000,
    "SCMP_ACT_KILL_THREAD": 0x00000000,
    "SCMP_ACT_KILL_PROCESS": 0x80000000,
    "SCMP_ACT_TRAP": 0x00030000,
    "SCMP_ACT_ERRNO": 0x00050000,
    "SCMP_ACT_TRACE": 0x7FF00000,
    "SCMP_ACT_LOG": 0x7FFC0000,
    "SCMP_ACT_ALLOW": 0x7FFF0000,
}
_WITH_VALUE = ("SCMP_ACT_ERRNO", "SCMP_ACT_TRACE")

# enum scmp_compare.
OPERATORS = {
    "SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4,
    "SCMP_CMP_GE": 5, "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7,
}

# docker's architecture names; libseccomp's are the same without the
# prefix, in lower case.
ARCHITECTURES = (
    "SCMP_ARCH_X86", "SCMP_ARCH_X86_64", "SCMP_ARCH_X32", "SCMP_ARCH_ARM", "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64", "SCMP_ARCH_MIPS64N32", "SCMP_ARCH_MIPSEL",
    "SCMP_ARCH_MIPSEL64", "SCMP_ARCH_MIPSEL64N32", "SCMP_ARCH_PPC", "SCMP_ARCH_PPC64",
    "SCMP_ARCH_PPC64LE", "SCMP_ARCH_RISCV64", "SCMP_ARCH_S390", "SCMP_ARCH_S390X",
    "SCMP_ARCH_LOONGARCH64",
)

# uname's machine -> (the profile's architecture, the name docker's
# "includes"/"excludes" use for it).
HOST_ARCHITECTURES = {
    "x86_64": ("SCMP_ARCH_X86_64", "amd64"),
    "aarch64": ("SCMP_ARCH_AARCH64", "arm64"),
    "i686": ("SCMP_ARCH_X86", "x86"),
    "armv7l": ("SCMP_ARCH_ARM", "arm"),
    "ppc64le": ("SCMP_ARCH_PPC64LE", "ppc64le"),
    "s390x": ("SCMP_ARCH_S390X", "s390x"),
    "riscv64": ("SCMP_ARCH_RISCV64", "riscv64"),
}

# seccomp(2) filter flags a profile may ask for. TSYNC is accepted and
# means nothing here: the filter is loaded by a single-threaded process.
FLAGS = {
    "SECCOMP_FILTER_FLAG_TSYNC": 0,
    "SECCOMP_FILTER_FLAG_LOG": 2,
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": 4,
}
# Without "flags", as runc: a filter does not force the speculative store
# bypass mitigation on the container (it slows every process down).
DEFAULT_FLAGS = FLAGS["SECCOMP_FILTER_FLAG_SPEC_ALLOW"]

# Calls newer than libseccomp 2.5.4 resolves, by number: calls added since
# Linux 5.1 have the same number on every architecture but alpha and mips.
# Used for the host's own architecture only (libseccomp cannot translate
# an unknown number to the 32-bit ABIs).
NEWER_SYSCALLS = {
    "statmount": 457, "listmount": 458, "lsm_get_self_attr": 459, "lsm_set_self_attr": 460,
    "lsm_list_modules": 461, "mseal": 462, "setxattrat": 463, "getxattrat": 464,
    "listxattrat": 465, "removexattrat": 466, "open_tree_attr": 467,
}

# The kernel refuses longer programs (BPF_MAXINSNS).
MAX_INSTRUCTIONS = 4096

MAX_ERRNO = 4095


@attrs.frozen
class Condition:
    """
    One argument test: argument C{index} (0-5) compared with C{value} by
    C{op}; for SCMP_CMP_MASKED_EQ, C{value} is the mask and the masked
    argument must equal C{value_two}.
    """

    index: int
    op: str
    value: int
    value_two: int = 0


@attrs.frozen
class RuleFilter:
    """
    docker's C{includes} or C{excludes}: capabilities ("CAP_SYS_ADMIN"),
    architectures ("amd64", "x32") and a minimum kernel (major, minor).
    """

    caps: tuple[str, ...] = ()
    arches: tuple[str, ...] = ()
    min_kernel: tuple[int, int] | None = None


@attrs.frozen
class Rule:
    """
    C{action} for the calls C{names} when every condition in C{args}
    holds. C{errno_ret} is the value of an ERRNO or TRACE action (None:
    EPERM).
    """

    names: tuple[str, ...]
    action: str
    errno_ret: int | None = None
    args: tuple[Condition, ...] = ()
    includes: RuleFilter = RuleFilter()
    excludes: RuleFilter = RuleFilter()


@attrs.frozen
class Profile:
    """
    A parsed profile; C{digest} identifies its content (the compile cache's
    key). C{architectures} is docker's older form of C{arch_map}, whose
    entries are (architecture, sub-architectures). C{flags} None means the
    default flags.
    """

    default_action: str
    rules: tuple[Rule, ...]
    digest: str
    default_errno_ret: int | None = None
    architectures: tuple[str, ...] = ()
    arch_map: tuple[tuple[str, tuple[str, ...]], ...] = ()
    flags: tuple[str, ...] | None = None


@attrs.frozen
class Program:
    """
    A compiled filter: classic BPF (struct sock_filter entries, 8 bytes
    each) and the seccomp(2) flags to load it with.
    """

    code: bytes
    flags: int


# ---------------------------------------------------------------- parsing


class _Reader:
    """
    Type checks with the path of the value in the message.
    """

    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, problem: str) -> errors.InvalidArgument:
        return errors.InvalidArgument(f"invalid seccomp profile: {self.where}: {problem}")

    def at(self, key: str | int) -> "_Reader":
        return _Reader(f"{self.where}[{key}]" if isinstance(key, int) else f"{self.where}.{key}")

    def string(self, value: object) -> str:
        if not isinstance(value, str):
            raise self.fail(f"expected a string, got {_kind(value)}")
        return value

    def unsigned(self, value: object, limit: int = 2**64 - 1) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= limit:
            raise self.fail(f"expected an integer from 0 to {limit}, got {_shown(value)}")
        return value

    def strings(self, value: object) -> tuple[str, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            raise self.fail(f"expected a list of strings, got {_kind(value)}")
        return tuple(self.at(i).string(v) for i, v in enumerate(value))

    def objects(self, value: object) -> list[tuple["_Reader", dict[str, Any]]]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(f"expected a list, got {_kind(value)}")
        return [(self.at(i), self.at(i).mapping(v)) for i, v in enumerate(value)]

    def mapping(self, value: object) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(f"expected an object, got {_kind(value)}")
        return value

    def action(self, value: object) -> str:
        name = self.string(value)
        if name == "SCMP_ACT_NOTIFY":
            raise self.fail("SCMP_ACT_NOTIFY is not supported (Ross has no seccomp agent)")
        if name not in ACTIONS:
            raise self.fail(f"unknown action {name!r}: use one of {', '.join(ACTIONS)}")
        return name

    def architecture(self, value: object) -> str:
        name = self.string(value)
        if name not in ARCHITECTURES:
            raise self.fail(f"unknown architecture {name!r}")
        return name


def _kind(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(value), "a number")


def _shown(value: object) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else _kind(value)


def _kernel_version(reader: _Reader, value: object) -> tuple[int, int] | None:
    text = reader.string(value)
    if not text:
        return None
    major, dot, minor = text.partition(".")
    if not (dot and major.isdigit() and minor.isdigit()) or (int(major), int(minor)) == (0, 0):
        raise reader.fail(f'invalid kernel version {text!r}, expected "<kernel>.<major>" (e.g. "4.8")')
    return int(major), int(minor)


def _rule_filter(reader: _Reader, value: object) -> RuleFilter:
    if value is None:
        return RuleFilter()
    d = reader.mapping(value)
    return RuleFilter(caps=reader.at("caps").strings(d.get("caps")),
                      arches=reader.at("arches").strings(d.get("arches")),
                      min_kernel=_kernel_version(reader.at("minKernel"), d.get("minKernel", "")))


def _condition(reader: _Reader, d: dict[str, Any]) -> Condition:
    op = reader.at("op").string(d.get("op"))
    if op not in OPERATORS:
        raise reader.at("op").fail(f"unknown operator {op!r}: use one of {', '.join(OPERATORS)}")
    return Condition(index=reader.at("index").unsigned(d.get("index", 0), 5),
                     op=op,
                     value=reader.at("value").unsigned(d.get("value", 0)),
                     value_two=reader.at("valueTwo").unsigned(d.get("valueTwo", 0)))


def _rule(reader: _Reader, d: dict[str, Any]) -> Rule:
    names = reader.at("names").strings(d.get("names"))
    if d.get("name"):
        if names:
            raise reader.fail("both 'name' and 'names' are given, use 'names'")
        names = (reader.at("name").string(d["name"]),)
    if any(not name for name in names):
        raise reader.at("names").fail("an empty string is not a system call")
    errno_ret = d.get("errnoRet")
    return Rule(
        names=names,
        action=reader.at("action").action(d.get("action")),
        errno_ret=None if errno_ret is None else reader.at("errnoRet").unsigned(errno_ret, MAX_ERRNO),
        args=tuple(_condition(r, a) for r, a in reader.at("args").objects(d.get("args"))),
        includes=_rule_filter(reader.at("includes"), d.get("includes")),
        excludes=_rule_filter(reader.at("excludes"), d.get("excludes")),
    )


@functools.lru_cache(maxsize=32)
def parse(text: str) -> Profile | None:
    """
    The profile in C{text} (docker's JSON format), or None when it confines
    nothing (no default action and no rules: docker runs such a container
    unconfined). Raises InvalidArgument naming the problem.
    """
    try:
        document = json.loads(text)
    except ValueError as e:
        raise errors.InvalidArgument(f"invalid seccomp profile: decoding failed: {e}") from None
    top = _Reader("profile")
    d = top.mapping(document)
    syscalls = top.at("syscalls").objects(d.get("syscalls"))
    if not d.get("defaultAction") and not syscalls:
        return None
    if d.get("architectures") and d.get("archMap"):
        raise top.fail("both 'architectures' and 'archMap' are given, use one of them")
    if d.get("listenerPath"):
        raise top.at("listenerPath").fail("seccomp agents (SCMP_ACT_NOTIFY) are not supported")
    arch_map = []
    for reader, entry in top.at("archMap").objects(d.get("archMap")):
        arch_map.append((reader.at("architecture").architecture(entry.get("architecture")),
                         tuple(reader.at("subArchitectures").at(i).architecture(a) for i, a in
                               enumerate(reader.at("subArchitectures").strings(entry.get("subArchitectures"))))))
    flags = d.get("flags")
    if flags is not None:
        flags = top.at("flags").strings(flags)
        for i, flag in enumerate(flags):
            if flag not in FLAGS:
                raise top.at("flags").at(i).fail(f"unknown flag {flag!r}: use one of {', '.join(FLAGS)}")
    errno_ret = d.get("defaultErrnoRet")
    return Profile(
        default_action=top.at("defaultAction").action(d.get("defaultAction")),
        default_errno_ret=None if errno_ret is None else top.at("defaultErrnoRet").unsigned(errno_ret, MAX_ERRNO),
        architectures=tuple(top.at("architectures").at(i).architecture(a)
                            for i, a in enumerate(top.at("architectures").strings(d.get("architectures")))),
        arch_map=tuple(arch_map),
        flags=flags,
        rules=tuple(_rule(r, s) for r, s in syscalls),
        digest=hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest(),
    )


@functools.cache
def default_profile() -> Profile:
    """
    The builtin profile (docker's default).
    """
    text = importlib.resources.files(__package__).joinpath("seccomp_default.json").read_text()
    profile = parse(text)
    assert profile is not None
    return profile


def profile_for(security_opt: dict[str, str], privileged: bool) -> Profile | None:
    """
    The profile a container runs with, from its C{seccomp} security option
    ("unconfined", "builtin" or a profile's JSON; absent means builtin), as
    docker decides: a privileged container runs unconfined unless it was
    given a profile of its own.
    """
    value = security_opt.get("seccomp", "builtin")
    if value == "unconfined":
        return None
    if value == "builtin":
        return None if privileged else default_profile()
    return parse(value)


# ---------------------------------------------------------------- compiling


def applies(rule: Rule, capabilities: frozenset[str], arch: str, kernel: tuple[int, int]) -> bool:
    """
    Whether C{rule} holds for a container with C{capabilities} ("CAP_..."
    names) on architecture C{arch} (docker's name, "amd64") and kernel
    (major, minor): docker's reading of C{includes} and C{excludes}.
    """
    ex, inc = rule.excludes, rule.includes
    if arch in ex.arches or any(cap in capabilities for cap in ex.caps):
        return False
    if ex.min_kernel is not None and kernel >= ex.min_kernel:
        return False
    if inc.arches and arch not in inc.arches:
        return False
    if not all(cap in capabilities for cap in inc.caps):
        return False
    return inc.min_kernel is None or kernel >= inc.min_kernel


def capability_names(mask: int) -> frozenset[str]:
    return frozenset(f"CAP_{name}" for number, name in enumerate(linux.CAPABILITIES) if mask & (1 << number))


def kernel_version(release: str) -> tuple[int, int]:
    """
    (major, minor) of a kernel release ("6.1.0-18-amd64" -> (6, 1)).
    """
    major, _, rest = release.partition(".")
    minor = ""
    for c in rest:
        if not c.isdigit():
            break
        minor += c
    return int(major), int(minor or 0)


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


_SCMP_FLTATR_CTL_OPTIMIZE = 8
_NR_SCMP_ERROR = -1


@functools.cache
def _libseccomp() -> ctypes.CDLL:
    try:
        lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    except OSError as e:
        raise errors.FailedPrecondition(
            f"seccomp profiles need libseccomp.so.2 (Debian's libseccomp2): {e}; "
            "or run the container with --security-opt seccomp=unconfined") from None
    lib.seccomp_init.argtypes = (ctypes.c_uint32,)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_release.argtypes = (ctypes.c_void_p,)
    lib.seccomp_release.restype = None
    lib.seccomp_arch_resolve_name.argtypes = (ctypes.c_char_p,)
    lib.seccomp_arch_resolve_name.restype = ctypes.c_uint32
    lib.seccomp_arch_add.argtypes = (ctypes.c_void_p, ctypes.c_uint32)
    lib.seccomp_arch_remove.argtypes = (ctypes.c_void_p, ctypes.c_uint32)
    lib.seccomp_attr_set.argtypes = (ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32)
    lib.seccomp_syscall_resolve_name.argtypes = (ctypes.c_char_p,)
    lib.seccomp_rule_add_array.argtypes = (ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                           ctypes.POINTER(_ArgCmp))
    lib.seccomp_merge.argtypes = (ctypes.c_void_p, ctypes.c_void_p)
    lib.seccomp_export_bpf.argtypes = (ctypes.c_void_p, ctypes.c_int)
    return lib


def _action_value(action: str, errno_ret: int | None) -> int:
    value = ACTIONS[action]
    if action in _WITH_VALUE:
        value |= 1 if errno_ret is None else errno_ret  # EPERM unless given
    return value


def _architectures(profile: Profile, native: str) -> list[str]:
    # The host's own is always filtered (libseccomp starts with it).
    if profile.architectures:
        return [native, *(a for a in profile.architectures if a != native)]
    for arch, subs in profile.arch_map:
        if arch == native:
            return [native, *(a for a in subs if a != native)]
    return [native]


def _check(result: int, what: str) -> None:
    if result < 0:
        raise errors.InvalidArgument(f"invalid seccomp profile: {what}: {os.strerror(-result)}")


class _Context:
    """
    One libseccomp filter context for some architectures.
    """

    def __init__(self, lib: ctypes.CDLL, default: int, arches: list[int], native: int) -> None:
        self.lib = lib
        self.ctx = lib.seccomp_init(default)
        if not self.ctx:
            raise MemoryError("seccomp_init failed")
        try:
            # A binary search over the calls, as runc asks for (and like it,
            # without where libseccomp lacks it): the kernel evaluates the
            # filter for every call its cache does not answer, and builds
            # that cache faster at load.
            lib.seccomp_attr_set(self.ctx, _SCMP_FLTATR_CTL_OPTIMIZE, 2)
            for token in arches:
                if token != native:
                    _check(lib.seccomp_arch_add(self.ctx, token), "adding an architecture")
            if native not in arches:
                _check(lib.seccomp_arch_remove(self.ctx, native), "removing the native architecture")
        except BaseException:
            self.release()
            raise

    def add(self, name: str, number: int, action: int, args: tuple[Condition, ...]) -> None:
        # Conditions on the same argument cannot be combined in one rule:
        # runc then makes each a rule of its own (any of them matches).
        indexes = [c.index for c in args]
        groups = [args] if len(set(indexes)) == len(indexes) else [(c,) for c in args]
        for group in groups:
            array = (_ArgCmp * max(1, len(group)))(
                *(_ArgCmp(c.index, OPERATORS[c.op], c.value, c.value_two) for c in group))
            _check(self.lib.seccomp_rule_add_array(self.ctx, action, number, len(group), array),
                   f"adding a rule for {name}")

    def release(self) -> None:
        if self.ctx:
            self.lib.seccomp_release(self.ctx)
            self.ctx = None


def compile_profile(profile: Profile, capabilities: int, machine: str, kernel: tuple[int, int]) -> Program:
    """
    The filter of C{profile} for a container with the C{capabilities} mask
    on C{machine} (uname's name) and C{kernel}. Blocking (libseccomp).
    Calls neither libseccomp nor L{NEWER_SYSCALLS} know are left out, as
    runc does. InvalidArgument when the filter cannot be built.
    """
    if machine not in HOST_ARCHITECTURES:
        raise errors.FailedPrecondition(f"seccomp profiles are not supported on {machine}")
    native_name, arch = HOST_ARCHITECTURES[machine]
    lib = _libseccomp()
    tokens = {}
    for name in _architectures(profile, native_name):
        token = lib.seccomp_arch_resolve_name(name[len("SCMP_ARCH_"):].lower().encode())
        if not token:
            raise errors.InvalidArgument(f"invalid seccomp profile: libseccomp does not know {name}")
        tokens[name] = token
    default = _action_value(profile.default_action, profile.default_errno_ret)
    caps = capability_names(capabilities)
    rules = [r for r in profile.rules if applies(r, caps, arch, kernel)]
    native, *others = tokens.values()
    # The host's own architecture in a context of its own, which takes
    # calls by number, the others in a second; merged at the end.
    contexts = [_Context(lib, default, [native], native)]
    try:
        if others:
            contexts.append(_Context(lib, default, others, native))
        for rule in rules:
            action = _action_value(rule.action, rule.errno_ret)
            if action == default:
                continue  # libseccomp refuses a rule that changes nothing
            for name in rule.names:
                number = lib.seccomp_syscall_resolve_name(name.encode())
                if number != _NR_SCMP_ERROR:
                    for context in contexts:
                        context.add(name, number, action, rule.args)
                elif name in NEWER_SYSCALLS:
                    contexts[0].add(name, NEWER_SYSCALLS[name], action, rule.args)
        for other in contexts[1:]:
            _check(lib.seccomp_merge(contexts[0].ctx, other.ctx), "merging the architectures' filters")
            other.ctx = None  # seccomp_merge released it
        code = _export(lib, contexts[0].ctx)
    finally:
        for context in contexts:
            context.release()
    if len(code) // 8 > MAX_INSTRUCTIONS:
        raise errors.InvalidArgument(f"invalid seccomp profile: its filter has {len(code) // 8} instructions, "
                                     f"more than the kernel's {MAX_INSTRUCTIONS}")
    flags = DEFAULT_FLAGS if profile.flags is None else 0
    for flag in profile.flags or ():
        flags |= FLAGS[flag]
    return Program(code, flags)


def _export(lib: ctypes.CDLL, ctx: int) -> bytes:
    # A memfd, not a pipe: this thread writes the whole program before
    # anything reads it.
    fd = os.memfd_create("ross-seccomp", os.MFD_CLOEXEC)
    try:
        _check(lib.seccomp_export_bpf(ctx, fd), "exporting the filter")
        size = os.lseek(fd, 0, os.SEEK_CUR)
        return os.pread(fd, size, 0)
    finally:
        os.close(fd)


# ---------------------------------------------------------------- the cache


class SeccompCompiler:
    """
    Programs for containers: compiled in the reactor's thread pool once per
    (profile, capability set) on this machine, kept for the C{size} most
    recently used; the same request while one compiles waits for it.

    @param bounding: the capability bounding set containers get theirs
        from (the daemon's own, which its shims inherit).
    """

    _log = Logger()

    def __init__(self, reactor: IReactorThreads, size: int = 64, machine: str | None = None,
                 release: str | None = None, bounding: int | None = None) -> None:
        self._reactor = reactor
        self._size = size
        self.machine = machine or platform.machine()
        self.kernel = kernel_version(release or platform.release())
        self._bounding = bounding
        self._programs: OrderedDict[tuple[str, int], Program] = OrderedDict()
        self._compiling: dict[tuple[str, int], list[Deferred[Program | None]]] = {}
        self._lock = threading.Lock()

    def capabilities(self, privileged: bool, cap_add: tuple[str, ...], cap_drop: tuple[str, ...]) -> int:
        """
        The capability set of a container, as the shim will give it.
        """
        if self._bounding is None:
            self._bounding = linux.bounding_set()
        return linux.container_capabilities(privileged, cap_add, cap_drop, self._bounding)

    def program(self, profile: Profile | None, capabilities: int) -> Deferred[Program | None]:
        """
        The program of C{profile} for a container with C{capabilities}
        (None without a profile); at once when it was compiled before.
        """
        if profile is None:
            return succeed(None)
        key = (profile.digest, capabilities)
        program = self._programs.get(key)
        if program is not None:
            self._programs.move_to_end(key)
            return succeed(program)
        d: Deferred[Program | None] = Deferred()
        waiting = self._compiling.setdefault(key, [])
        waiting.append(d)
        if len(waiting) == 1:
            deferToThreadPool(self._reactor, self._reactor.getThreadPool(), self._compile, profile,
                              capabilities).addBoth(self._compiled, key)
        return d

    def _compile(self, profile: Profile, capabilities: int) -> Program:
        # libseccomp keeps no shared state between contexts, but nothing
        # says it is thread-safe: one compile at a time.
        with self._lock:
            return compile_profile(profile, capabilities, self.machine, self.kernel)

    def _compiled(self, result: Program | Failure, key: tuple[str, int]) -> None:
        waiting = self._compiling.pop(key, [])
        if isinstance(result, Failure):
            for d in waiting:
                d.errback(result)
            return
        self._programs[key] = result
        while len(self._programs) > self._size:
            self._programs.popitem(last=False)
        for d in waiting:
            d.callback(result)

    def prepare(self) -> Deferred[Program | None]:
        """
        Compile the builtin profile for docker's default capabilities now,
        so that the first container does not wait for it.
        """
        d = self.program(default_profile(), self.capabilities(False, (), ()))

        def failed(f: Failure) -> None:
            self._log.failure("could not compile the builtin seccomp profile", f)
        return d.addErrback(failed)


def available() -> bool:
    """
    Whether this host can run seccomp filters: the kernel has them and
    libseccomp loads.
    """
    try:
        _libseccomp()
    except errors.RossError:
        return False
    with open("/proc/self/status", "rb") as f:
        return any(line.startswith(b"Seccomp:") for line in f)
