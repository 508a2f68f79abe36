"""
Seccomp profiles: docker's JSON format read and refused as docker does,
its conditional rules, compiling with libseccomp, the compile cache, and
compiled programs loaded for real in a forked child.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import signal
import time
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.internet.interfaces import IReactorThreads
from twisted.trial.unittest import SynchronousTestCase, TestCase

from ross import errors
from ross.engine.runtime import linux, seccomp
from ross.engine.runtime.seccomp import Profile, Program, SeccompCompiler, parse

DEFAULT_CAPS = linux.capability_mask(linux.DEFAULT_CAPABILITIES)
ALL_CAPS = (1 << len(linux.CAPABILITIES)) - 1
SYS_ADMIN = 1 << linux.capability_number("SYS_ADMIN")

# x86_64 system call numbers (Ross's shim is x86_64 only, see linux.py).
NR = {"getpid": 39, "personality": 135, "mount": 165, "kexec_load": 246, "add_key": 248,
      "keyctl": 250, "unshare": 272, "perf_event_open": 298, "open_by_handle_at": 304, "bpf": 321,
      "userfaultfd": 323, "clone": 56, "clone3": 435, "mseal": 462, "mkdir": 83, "socket": 41}
CLONE_NEWUSER = 0x10000000
CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
SIGCHLD = 17
AF_VSOCK = 40
UFFD_USER_MODE_ONLY = 1
ADDR_NO_RANDOMIZE = 0x0040000


def profile(**fields: Any) -> Profile:
    result = parse(json.dumps({"defaultAction": "SCMP_ACT_ALLOW", **fields}))
    assert result is not None
    return result


def compiled(p: Profile, caps: int = DEFAULT_CAPS) -> Program:
    return seccomp.compile_profile(p, caps, "x86_64", (6, 1))


def under_filter(program: Program, calls: dict[str, tuple[int, ...]]) -> dict[str, int]:
    """
    In a forked child with no_new_privs and C{program} loaded, make each
    call (name -> system call number and arguments): 0 or the errno it
    failed with.
    """
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read)
            libc = ctypes.CDLL(None, use_errno=True)
            libc.syscall.restype = ctypes.c_long
            linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1)
            linux.seccomp_filter(program.code, program.flags)
            results = {}
            for name, (number, *args) in calls.items():
                ctypes.set_errno(0)
                result = libc.syscall(ctypes.c_long(number), *(ctypes.c_long(a) for a in args))
                if number == NR["clone"] and result == 0:
                    os._exit(0)  # the clone's child
                if number == NR["clone"] and result > 0:
                    os.waitpid(result, 0)
                results[name] = ctypes.get_errno() if result < 0 else 0
            os.write(write, json.dumps(results).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        deadline = time.monotonic() + 30
        while os.waitpid(pid, os.WNOHANG) == (0, 0):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise AssertionError("the child under the filter did not finish")
            time.sleep(0.01)
        data = f.read()
    if not data:
        raise AssertionError("the child under the filter reported nothing")
    return dict(json.loads(data))


class ParseTests(SynchronousTestCase):
    def refused(self, document: object, *expected: str) -> None:
        text = document if isinstance(document, str) else json.dumps(document)
        e = self.assertRaises(errors.InvalidArgument, parse, text)
        for part in expected:
            self.assertIn(part, e.message)

    def test_builtin(self) -> None:
        """
        The builtin profile is docker's: errno EPERM by default, x86_64
        with its x86 and x32 ABIs, the allow list and conditional rules.
        """
        p = seccomp.default_profile()
        self.assertEqual((p.default_action, p.default_errno_ret), ("SCMP_ACT_ERRNO", 1))
        self.assertIn(("SCMP_ARCH_X86_64", ("SCMP_ARCH_X86", "SCMP_ARCH_X32")), p.arch_map)
        names = {n for r in p.rules for n in r.names}
        self.assertGreater(len(names), 380)
        for blocked in ("keyctl", "add_key", "request_key", "userfaultfd", "kexec_load", "kexec_file_load",
                        "swapon", "pivot_root", "io_uring_setup"):
            self.assertNotIn(blocked, names)

    def test_malformed(self) -> None:
        """
        What docker refuses is refused, the message saying where and why.
        """
        self.refused("{", "invalid seccomp profile: decoding failed")
        self.refused([], "profile: expected an object, got a list")
        self.refused({"defaultAction": "SCMP_ACT_NOPE"}, "profile.defaultAction", "unknown action 'SCMP_ACT_NOPE'")
        self.refused({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOPE"}]},
                     "profile.syscalls[0].action: unknown action 'SCMP_ACT_NOPE'")
        self.refused({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"]}]},
                     "profile.syscalls[0].action: expected a string, got null")
        self.refused({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_FOO"}]}]},
            "profile.syscalls[0].args[0].op: unknown operator 'SCMP_CMP_FOO'")
        self.refused({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]},
            "profile.syscalls[0].args[0].index: expected an integer from 0 to 5, got 6")
        self.refused({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"name": "mkdir", "names": ["rmdir"], "action": "SCMP_ACT_ERRNO"}]}, "both 'name' and 'names'")
        self.refused({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": [""], "action": "SCMP_ACT_ERRNO"}]},
                     "an empty string is not a system call")
        self.refused({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": "EPERM"}]},
            "profile.syscalls[0].errnoRet: expected an integer from 0 to 4095, got \"EPERM\"")
        self.refused({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
                      "archMap": [{"architecture": "SCMP_ARCH_X86_64"}]}, "both 'architectures' and 'archMap'")
        self.refused({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_VAX"]},
                     "profile.architectures[0]: unknown architecture 'SCMP_ARCH_VAX'")
        self.refused({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["ptrace"], "action": "SCMP_ACT_ERRNO", "includes": {"minKernel": "4"}}]},
            "profile.syscalls[0].includes.minKernel: invalid kernel version '4'")
        self.refused({"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_NOPE"]},
                     "profile.flags[0]: unknown flag")
        self.refused({"defaultAction": "SCMP_ACT_NOTIFY"}, "SCMP_ACT_NOTIFY is not supported")
        self.refused({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/run/agent.sock"}, "listenerPath")

    def test_confines_nothing(self) -> None:
        """
        No default action and no rules: docker runs the container
        unconfined.
        """
        self.assertIsNone(parse("{}"))
        self.assertIsNone(parse('{"syscalls": null, "archMap": []}'))

    def test_fields(self) -> None:
        """
        docker's older "name" is read as "names"; errnoRet, args and the
        conditions are kept.
        """
        p = profile(syscalls=[
            {"name": "mkdir", "action": "SCMP_ACT_ERRNO", "errnoRet": 122,
             "args": [{"index": 1, "value": 0o700, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}],
             "includes": {"caps": ["CAP_CHOWN"], "minKernel": "5.4"}, "excludes": {"arches": ["x86"]}}])
        rule = p.rules[0]
        self.assertEqual((rule.names, rule.action, rule.errno_ret), (("mkdir",), "SCMP_ACT_ERRNO", 122))
        self.assertEqual(rule.args, (seccomp.Condition(1, "SCMP_CMP_MASKED_EQ", 0o700, 0),))
        self.assertEqual(rule.includes, seccomp.RuleFilter(caps=("CAP_CHOWN",), min_kernel=(5, 4)))
        self.assertEqual(rule.excludes.arches, ("x86",))

    def test_profile_for(self) -> None:
        """
        The seccomp security option picks the profile as docker does: none
        when unconfined, none for a privileged container unless it gave a
        profile of its own.
        """
        custom = json.dumps({"defaultAction": "SCMP_ACT_ALLOW"})
        self.assertIs(seccomp.profile_for({}, False), seccomp.default_profile())
        self.assertIs(seccomp.profile_for({"seccomp": "builtin"}, False), seccomp.default_profile())
        self.assertIsNone(seccomp.profile_for({"seccomp": "unconfined"}, False))
        self.assertIsNone(seccomp.profile_for({}, True))
        self.assertEqual(seccomp.profile_for({"seccomp": custom}, True), parse(custom))


class ConditionTests(SynchronousTestCase):
    """
    docker's includes and excludes: which rules of the builtin profile hold
    for which containers.
    """

    def rules(self, caps: int, arch: str = "amd64", kernel: tuple[int, int] = (6, 1)) -> dict[str, list[Any]]:
        names = seccomp.capability_names(caps)
        held: dict[str, list[Any]] = {}
        for rule in seccomp.default_profile().rules:
            if seccomp.applies(rule, names, arch, kernel):
                for name in rule.names:
                    held.setdefault(name, []).append(rule)
        return held

    def test_default_capabilities(self) -> None:
        """
        With docker's default capabilities: clone only without namespace
        flags, clone3 ENOSYS, no unshare, setns, mount, bpf or perf.
        """
        held = self.rules(DEFAULT_CAPS)
        [clone] = held["clone"]
        self.assertEqual(clone.args, (seccomp.Condition(0, "SCMP_CMP_MASKED_EQ", 0x7E020000, 0),))
        [clone3] = held["clone3"]
        self.assertEqual((clone3.action, clone3.errno_ret), ("SCMP_ACT_ERRNO", errno.ENOSYS))
        for name in ("unshare", "setns", "mount", "umount2", "bpf", "perf_event_open", "open_by_handle_at",
                     "syslog", "reboot"):
            self.assertNotIn(name, set(held))
        self.assertIn("chroot", set(held))

    def test_capabilities_unlock(self) -> None:
        """
        --cap-add enables what docker enables for each capability.
        """
        held = self.rules(DEFAULT_CAPS | SYS_ADMIN)
        for name in ("unshare", "setns", "mount", "bpf", "perf_event_open", "sethostname"):
            self.assertEqual([r.action for r in held[name]], ["SCMP_ACT_ALLOW"], name)
        self.assertEqual([r.args for r in held["clone"]], [()])
        self.assertEqual([r.action for r in held["clone3"]], ["SCMP_ACT_ALLOW"])
        for cap, name in (("SYS_PTRACE", "kcmp"), ("SYS_MODULE", "init_module"), ("BPF", "bpf"),
                          ("PERFMON", "perf_event_open"), ("SYS_TIME", "settimeofday"),
                          ("DAC_READ_SEARCH", "open_by_handle_at")):
            self.assertNotIn(name, set(self.rules(DEFAULT_CAPS)))
            self.assertIn(name, set(self.rules(DEFAULT_CAPS | 1 << linux.capability_number(cap))), cap)

    def test_architecture_and_kernel(self) -> None:
        self.assertIn("arch_prctl", set(self.rules(DEFAULT_CAPS, "amd64")))
        self.assertNotIn("arch_prctl", set(self.rules(DEFAULT_CAPS, "arm64")))
        self.assertEqual([r.args[0].index for r in self.rules(DEFAULT_CAPS, "s390x")["clone"]], [1])
        self.assertIn("ptrace", set(self.rules(DEFAULT_CAPS, kernel=(4, 8))))
        self.assertNotIn("ptrace", set(self.rules(DEFAULT_CAPS, kernel=(4, 4))))

    def test_kernel_version(self) -> None:
        self.assertEqual(seccomp.kernel_version("6.18.44-fc-v1272"), (6, 18))
        self.assertEqual(seccomp.kernel_version("3.12-1-amd64"), (3, 12))


class CompileTests(SynchronousTestCase):
    def test_builtin_program(self) -> None:
        """
        The builtin profile compiles to a program the kernel takes, loaded
        without forcing the speculative store bypass mitigation.
        """
        program = compiled(seccomp.default_profile())
        self.assertEqual(len(program.code) % 8, 0)
        self.assertLessEqual(len(program.code) // 8, seccomp.MAX_INSTRUCTIONS)
        self.assertEqual(program.flags, seccomp.FLAGS["SECCOMP_FILTER_FLAG_SPEC_ALLOW"])

    def test_flags(self) -> None:
        self.assertEqual(compiled(profile(flags=[])).flags, 0)
        self.assertEqual(compiled(profile(flags=["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_TSYNC"])).flags, 2)

    def test_unknown_calls_left_out(self) -> None:
        """
        Calls libseccomp does not know are left out, as runc does.
        """
        p = profile(syscalls=[{"names": ["no_such_call", "mkdir"], "action": "SCMP_ACT_ERRNO"}])
        results = under_filter(compiled(p), {"mkdir": (NR["mkdir"], 0, 0o700)})
        self.assertEqual(results, {"mkdir": errno.EPERM})

    def test_unknown_to_libseccomp(self) -> None:
        """
        A profile docker's format allows but libseccomp cannot build is
        refused, naming the problem.
        """
        e = self.assertRaises(errors.InvalidArgument, compiled, profile(architectures=["SCMP_ARCH_LOONGARCH64"]))
        self.assertIn("libseccomp does not know SCMP_ARCH_LOONGARCH64", e.message)

    def test_host_architecture_always(self) -> None:
        """
        A profile naming only another architecture still filters the
        host's own (as runc: libseccomp starts with it).
        """
        p = profile(architectures=["SCMP_ARCH_X86"], syscalls=[{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}])
        self.assertEqual(under_filter(compiled(p), {"mkdir": (NR["mkdir"], 0, 0o700)}), {"mkdir": errno.EPERM})


class LoadTests(SynchronousTestCase):
    """
    Programs loaded for real, in a forked child.
    """

    CALLS = {
        "getpid": (NR["getpid"],),
        "keyctl": (NR["keyctl"], 0, 2**64 - 3, 0),  # KEYCTL_GET_KEYRING_ID of the session keyring
        "add_key": (NR["add_key"], 0, 0, 0, 0, 0),
        "bpf": (NR["bpf"], 2**64 - 1, 0, 0),
        "perf_event_open": (NR["perf_event_open"], 0, 0, 2**64 - 1, 2**64 - 1, 0),
        "userfaultfd": (NR["userfaultfd"], UFFD_USER_MODE_ONLY),
        "mount": (NR["mount"], 0, 0, 0, 0, 0),
        "kexec_load": (NR["kexec_load"], 0, 0, 0, 0),
        "open_by_handle_at": (NR["open_by_handle_at"], 2**64 - 1, 0, 0),
        "unshare_ns": (NR["unshare"], CLONE_NEWNS),
        "clone_net": (NR["clone"], CLONE_NEWNET | SIGCHLD, 0, 0, 0, 0),
        "clone_user": (NR["clone"], CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0),
        "fork": (NR["clone"], SIGCHLD, 0, 0, 0, 0),
        "clone3": (NR["clone3"], 0, 0),
        "vsock": (NR["socket"], AF_VSOCK, 1, 0),
        "personality_query": (NR["personality"], 0xFFFFFFFF),
        "personality_no_aslr": (NR["personality"], ADDR_NO_RANDOMIZE),
        "mseal": (NR["mseal"], 0, 0, 0),
        # Last: it succeeds without the filter.
        "unshare_user": (NR["unshare"], CLONE_NEWUSER),
    }

    def test_default_profile(self) -> None:
        """
        Under the builtin profile with docker's default capabilities:
        keyrings, bpf, perf, userfaultfd, mounts, kexec, handles and new
        namespaces (by unshare or clone) fail with EPERM, clone3 with ENOSYS (so that libc falls
        back to clone), AF_VSOCK sockets and unusual personalities are
        refused; getpid, fork, querying the personality and mseal (a call newer
        than libseccomp) work. Without a filter the same calls get other
        answers, so each line tests the filter.
        """
        results = under_filter(compiled(seccomp.default_profile()), self.CALLS)
        eperm = ("keyctl", "add_key", "bpf", "perf_event_open", "userfaultfd", "mount", "kexec_load",
                 "open_by_handle_at", "unshare_ns", "unshare_user", "clone_net", "clone_user", "vsock",
                 "personality_no_aslr")
        self.assertEqual(results, {**{name: errno.EPERM for name in eperm}, "clone3": errno.ENOSYS,
                                   "getpid": 0, "fork": 0, "personality_query": 0, "mseal": 0})
        unfiltered = under_filter(compiled(profile()), self.CALLS)
        for name in eperm:
            self.assertNotEqual(unfiltered[name], errno.EPERM, name)
        self.assertNotEqual(unfiltered["clone3"], errno.ENOSYS)

    def test_sys_admin(self) -> None:
        """
        With CAP_SYS_ADMIN, docker's profile lets namespaces be made.
        """
        results = under_filter(compiled(seccomp.default_profile(), DEFAULT_CAPS | SYS_ADMIN),
                               {"unshare_user": self.CALLS["unshare_user"], "clone3": self.CALLS["clone3"],
                                "keyctl": self.CALLS["keyctl"]})
        self.assertEqual(results["unshare_user"], 0)
        self.assertNotEqual(results["clone3"], errno.ENOSYS)
        self.assertEqual(results["keyctl"], errno.EPERM)

    def test_errno_ret(self) -> None:
        """
        A rule's errnoRet is what the call fails with; the arguments decide.
        """
        p = profile(syscalls=[{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EDQUOT,
                               "args": [{"index": 1, "value": 0o700, "op": "SCMP_CMP_EQ"}]}])
        results = under_filter(compiled(p), {"mkdir_700": (NR["mkdir"], 0, 0o700), "mkdir_755": (NR["mkdir"], 0, 0o755)})
        self.assertEqual(results, {"mkdir_700": errno.EDQUOT, "mkdir_755": errno.EFAULT})


class CompilerTests(TestCase):
    """
    L{SeccompCompiler}: in a thread, once per profile and capability set.
    """

    def counting(self, size: int = 64) -> tuple[SeccompCompiler, list[int]]:
        calls: list[int] = []

        class Counting(SeccompCompiler):
            def _compile(self, profile: Profile, capabilities: int) -> Program:
                calls.append(capabilities)
                return super()._compile(profile, capabilities)
        return Counting(IReactorThreads(reactor), size=size, machine="x86_64", release="6.1.0"), calls

    async def test_cached(self) -> None:
        """
        Concurrent requests share one compile; later ones get the same
        program at once; another capability set compiles anew.
        """
        compiler, calls = self.counting()
        builtin = seccomp.default_profile()
        first, second = await gatherResults([compiler.program(builtin, DEFAULT_CAPS),
                                             compiler.program(builtin, DEFAULT_CAPS)])
        self.assertIs(first, second)
        again = self.successResultOf(compiler.program(builtin, DEFAULT_CAPS))
        self.assertIs(again, first)
        other = await compiler.program(builtin, DEFAULT_CAPS | SYS_ADMIN)
        assert other is not None and first is not None
        self.assertNotEqual(other.code, first.code)
        self.assertEqual(calls, [DEFAULT_CAPS, DEFAULT_CAPS | SYS_ADMIN])
        self.assertIsNone(self.successResultOf(compiler.program(None, DEFAULT_CAPS)))

    async def test_bounded(self) -> None:
        compiler, calls = self.counting(size=1)
        builtin = seccomp.default_profile()
        await compiler.program(builtin, DEFAULT_CAPS)
        await compiler.program(builtin, ALL_CAPS)
        await compiler.program(builtin, DEFAULT_CAPS)
        self.assertEqual(calls, [DEFAULT_CAPS, ALL_CAPS, DEFAULT_CAPS])

    async def test_failure(self) -> None:
        """
        A profile that does not compile fails every waiter, and is tried
        again next time.
        """
        compiler, calls = self.counting()
        bad = profile(architectures=["SCMP_ARCH_LOONGARCH64"])
        for _ in range(2):
            await self.assertFailure(compiler.program(bad, DEFAULT_CAPS), errors.InvalidArgument)
        self.assertEqual(len(calls), 2)

    def test_capabilities(self) -> None:
        """
        A container's capabilities as the shim gives them, within the
        daemon's bounding set.
        """
        compiler = SeccompCompiler(IReactorThreads(reactor), bounding=DEFAULT_CAPS | SYS_ADMIN)
        self.assertEqual(compiler.capabilities(False, (), ()), DEFAULT_CAPS)
        self.assertEqual(compiler.capabilities(False, ("sys_admin", "NET_ADMIN"), ("CHOWN",)),
                         (DEFAULT_CAPS | SYS_ADMIN) & ~1)
        self.assertEqual(compiler.capabilities(True, (), ()), DEFAULT_CAPS | SYS_ADMIN)
        self.assertEqual(compiler.capabilities(False, ("ALL",), ("ALL",)), DEFAULT_CAPS | SYS_ADMIN)
