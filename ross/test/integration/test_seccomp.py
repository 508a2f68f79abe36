"""
Seccomp for real: containers under the builtin profile, unconfined, under
a profile of their own, privileged; exec'd processes and health checks
filtered too; the CLI and the API reading, refusing and showing profiles.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import grpc
from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest, TestCase

from ross.engine.runtime import seccomp
from ross.engine.runtime import spec as rs
from ross.interfaces import IShim
from ross.testing.containers import ContainerTestCase, sleep
from ross.testing.probes import compile_probe
from ross.testing.runtime import RuntimeHarness
from ross.v1 import common_pb2, container_pb2, system_pb2

# Calls the builtin profile refuses, each made so that without the filter
# its answer is something else (the call works, or fails another way).
SYSCALL_PROBE = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/personality.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

static void report(const char *name, long result) {
    printf("%s %s\n", name, result < 0 ? strerrorname_np(errno) : "ok");
}

int main(void) {
    report("getpid", syscall(SYS_getpid));
    /* KEYCTL_GET_KEYRING_ID of the session keyring, without creating it */
    report("keyctl", syscall(SYS_keyctl, 0, -3, 0));
    report("add_key", syscall(SYS_add_key, "ross-no-such-type", "probe", "x", 1, -3));
    report("userfaultfd", syscall(SYS_userfaultfd, 1 /* UFFD_USER_MODE_ONLY */));
    report("perf_event_open", syscall(SYS_perf_event_open, NULL, 0, -1, -1, 0));
    report("clone3", syscall(SYS_clone3, NULL, 0));
    report("vsock", socket(40 /* AF_VSOCK */, SOCK_STREAM, 0));
    report("personality", personality(ADDR_NO_RANDOMIZE));
    report("unshare_user", unshare(CLONE_NEWUSER));
    fflush(stdout);
    return 0;
}
"""

REFUSED = {"getpid": "ok", "keyctl": "EPERM", "add_key": "EPERM", "userfaultfd": "EPERM",
           "perf_event_open": "EPERM", "clone3": "ENOSYS", "vsock": "EPERM", "personality": "EPERM",
           "unshare_user": "EPERM"}

# A profile of one's own: everything allowed but making directories,
# which fails with EDQUOT ("Disk quota exceeded").
NO_MKDIR = {"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 122}]}


def probe_results(out: bytes) -> dict[str, str]:
    return dict(line.split(" ", 1) for line in out.decode().splitlines())


def status_field(out: bytes, field: str) -> str:
    for line in out.decode().splitlines():
        if line.startswith(field + ":"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no {field} in {out!r}")


class RuntimeSeccompTests(RuntimeHarness, TestCase):
    def setUp(self) -> None:
        if os.geteuid() != 0:
            raise SkipTest("the runtime needs root")
        self.setUpRuntime()
        self.probe = compile_probe("syscalls", SYSCALL_PROBE)

    def spec_with_probe(self, *args: str, **fields: Any) -> rs.ContainerSpec:
        mounts = (rs.BindMount(str(self.probe), "/probe", readonly=True),)
        return self.spec(*args, mounts=mounts, **fields)

    async def run_probe(self, **fields: Any) -> tuple[dict[str, str], str]:
        """
        The probe's results and /proc/self/status's Seccomp field, in one
        container.
        """
        status, out, err = await self.run_container(self.spec_with_probe(
            "sh", "-c", "grep '^Seccomp:' /proc/self/status; /probe", **fields))
        self.assertEqual(status.exit_code, 0, err)
        first, _, rest = out.partition(b"\n")
        return probe_results(rest), status_field(first, "Seccomp")

    async def test_default(self) -> None:
        """
        A default container runs under the builtin filter: no keyrings,
        userfaultfd, perf, vsock, odd personalities or user namespaces
        (busybox's unshare -U fails too), clone3 answers ENOSYS.
        """
        results, mode = await self.run_probe()
        self.assertEqual((results, mode), (REFUSED, "2"))
        status, out, err = await self.run_container(self.spec("unshare", "-U", "true"))
        self.assertNotEqual(status.exit_code, 0)
        self.assertIn(b"Operation not permitted", err)

    async def test_init_reaper_confined(self) -> None:
        """
        With --init, the reaper that is PID 1 is confined as the command
        is: the container's capabilities, no_new_privs and the filter, so
        nothing in the container can gain more by getting at it.
        """
        status, out, err = await self.run_container(self.spec(
            "grep", "-E", "^(CapEff|CapBnd|NoNewPrivs|Seccomp):", "/proc/1/status", init=True))
        self.assertEqual(status.exit_code, 0, err)
        fields = dict(line.split(":\t") for line in out.decode().splitlines())
        self.assertEqual(fields, {"CapEff": "00000000a80425fb", "CapBnd": "00000000a80425fb",
                                  "NoNewPrivs": "1", "Seccomp": "2"})

    async def test_unconfined(self) -> None:
        """
        Without a profile the same calls get the kernel's answers.
        """
        results, mode = await self.run_probe(seccomp=None)
        self.assertEqual(mode, "0")
        for name in ("keyctl", "userfaultfd", "personality", "unshare_user"):
            self.assertEqual(results[name], "ok", name)
        self.assertEqual(results["clone3"], "EINVAL")
        self.assertNotEqual(results["perf_event_open"], "EPERM")
        status, out, err = await self.run_container(self.spec("unshare", "-U", "true", seccomp=None))
        self.assertEqual(status.exit_code, 0, err)

    async def test_cap_sys_admin(self) -> None:
        """
        --cap-add SYS_ADMIN allows what docker's profile allows with it:
        mounts and namespaces; keyrings stay refused.
        """
        results, mode = await self.run_probe(cap_add=("SYS_ADMIN",))
        self.assertEqual((results["unshare_user"], results["keyctl"], mode), ("ok", "EPERM", "2"))
        status, out, err = await self.run_container(self.spec(
            "sh", "-c", "mount -t tmpfs t /tmp && echo mounted", cap_add=("SYS_ADMIN",)))
        self.assertEqual(out, b"mounted\n", err)

    async def test_own_profile(self) -> None:
        """
        A profile of one's own applies: mkdir fails with its errno.
        """
        profile = seccomp.parse(json.dumps(NO_MKDIR))
        status, out, err = await self.run_container(self.spec("mkdir", "/tmp/d", seccomp=profile))
        self.assertEqual(status.exit_code, 1)
        self.assertIn(b"Disk quota exceeded", err)
        status, out, err = await self.run_container(self.spec("mkdir", "/tmp/d", seccomp=None))
        self.assertEqual(status.exit_code, 0, err)

    async def test_privileged(self) -> None:
        """
        A privileged container runs unconfined.
        """
        status, out, _ = await self.run_container(self.spec("grep", "^Seccomp:", "/proc/self/status",
                                                            privileged=True))
        self.assertEqual(status_field(out, "Seccomp"), "0")

    async def test_without_no_new_privs(self) -> None:
        """
        With no-new-privileges=false the filter is loaded while the
        capability to do so is still there: root and another user both run
        filtered, without no_new_privs.
        """
        for user in ("", "33:33"):
            status, out, err = await self.run_container(self.spec_with_probe(
                "sh", "-c", "grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status; id -u; /probe",
                no_new_privileges=False, user=user))
            self.assertEqual(status.exit_code, 0, err)
            lines = out.split(b"\n")
            self.assertEqual((status_field(lines[0], "NoNewPrivs"), status_field(lines[1], "Seccomp")), ("0", "2"))
            self.assertEqual(lines[2].decode(), user.split(":")[0] or "0")
            self.assertEqual(probe_results(b"\n".join(lines[3:])), REFUSED)

    async def test_exec(self) -> None:
        """
        Every exec'd process gets the container's filter, with
        --privileged too (runc loads the container's filter, as docker).
        """
        handle = await self.start(self.spec_with_probe("sleep", "100"))
        for exec_id, privileged in (("plain", False), ("privileged", True)):
            out = await self.exec_output(handle, exec_id, rs.ExecProcess(
                args=("sh", "-c", "grep '^Seccomp:' /proc/self/status; /probe"), privileged=privileged))
            first, _, rest = out.partition(b"\n")
            self.assertEqual(status_field(first, "Seccomp"), "2")
            self.assertEqual(probe_results(rest)["keyctl"], "EPERM")
        unconfined = await self.start(self.spec_with_probe("sleep", "100", seccomp=None))
        out = await self.exec_output(unconfined, "e", rs.ExecProcess(args=("grep", "^Seccomp:", "/proc/self/status")))
        self.assertEqual(status_field(out, "Seccomp"), "0")

    async def exec_output(self, handle: IShim, exec_id: str, process: rs.ExecProcess) -> bytes:
        out = bytearray()
        session = await handle.exec(exec_id, process, on_output=lambda stream, data: out.extend(data))
        assert session.attachment is not None
        status = await session.attachment.done
        self.assertEqual(status.exit_code if status else None, 0, out)
        return bytes(out)


class ContainerSeccompTests(ContainerTestCase):
    """
    Profiles through the CLI and the API: read from files, refused when
    malformed, shown by inspect and info; health checks filtered.
    """

    @inlineCallbacks
    def test_profile_file(self) -> Any:
        """
        --security-opt seccomp=FILE sends the file's profile, which applies;
        inspect shows it as the security option it was sent as.
        """
        path = Path(self.mktemp())
        path.write_text(json.dumps(NO_MKDIR, indent=2))
        result = yield self.ross("run", "--name", "own", "--security-opt", f"seccomp={path}", "busybox",
                                 "mkdir", "/tmp/d")
        self.assertEqual(result.returncode, 1)
        self.assertIn(b"Disk quota exceeded", result.stderr)
        result = yield self.ross("inspect", "own")
        [opt] = json.loads(result.stdout)[0]["HostConfig"]["SecurityOpt"]
        key, _, profile = opt.partition("=")
        self.assertEqual((key, json.loads(profile)), ("seccomp", NO_MKDIR))
        result = yield self.ross("run", "--rm", "--security-opt", "seccomp=unconfined", "busybox",
                                 "unshare", "-U", "true")
        self.assertEqual(result.returncode, 0, result.stderr)
        result = yield self.ross("run", "--rm", "busybox", "unshare", "-U", "true")
        self.assertNotEqual(result.returncode, 0)
        result = yield self.ross("run", "--rm", "--privileged", "busybox", "grep", "^Seccomp:", "/proc/self/status")
        self.assertEqual(status_field(result.stdout, "Seccomp"), "0")

    @inlineCallbacks
    def test_refused(self) -> Any:
        """
        A malformed profile is refused at create with INVALID_ARGUMENT
        naming the problem, and nothing is created; a file that is not
        JSON is refused by the CLI, as docker's.
        """
        cases = [
            ("not json", "decoding failed"),
            (json.dumps({"defaultAction": "SCMP_ACT_FOO"}), "unknown action 'SCMP_ACT_FOO'"),
            (json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "op": "SCMP_CMP_NOPE"}]}]}),
             "profile.syscalls[0].args[0].op: unknown operator"),
            (json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_LOONGARCH64"]}),
             "libseccomp does not know SCMP_ARCH_LOONGARCH64"),
        ]
        for profile, problem in cases:
            create = container_pb2.CreateContainerRequest(
                config=container_pb2.ContainerConfig(image="busybox", cmd=common_pb2.StringList(values=["true"])),
                host_config=container_pb2.HostConfig(security_opt=[f"seccomp={profile}"]))
            e = yield self.assertFailure(deferToThread(self.api.containers.CreateContainer, create), grpc.RpcError)
            self.assertEqual(e.code(), grpc.StatusCode.INVALID_ARGUMENT)
            self.assertIn(problem, e.details())
        self.assertEqual(list(self.daemon.engine.containers.records), [])
        path = Path(self.mktemp())
        path.write_text("{")
        result = yield self.ross("create", "--security-opt", f"seccomp={path}", "busybox")
        self.assertEqual(result.returncode, 125)
        self.assertIn(f"compacting json for seccomp profile ({path}) failed".encode(), result.stderr)
        self.assertEqual(list(self.daemon.engine.containers.records), [])

    @inlineCallbacks
    def test_info(self) -> Any:
        """
        info lists the security options as docker does.
        """
        info = yield deferToThread(self.api.system.Info, system_pb2.InfoRequest())
        self.assertEqual(list(info.security_options), ["name=seccomp,profile=builtin", "name=no-new-privileges"])
        result = yield self.ross("info")
        self.assertIn(b"Security Options:\n seccomp\n  Profile: builtin\n no-new-privileges\n", result.stdout)

    @inlineCallbacks
    def test_health_check_filtered(self) -> Any:
        """
        Health checks run under the container's filter.
        """
        result = yield self.ross("run", "-d", "--name", "checked", "--health-cmd", "cat /proc/self/status",
                                 "--health-interval", "200ms", "busybox", "sleep", "100")
        self.assertEqual(result.returncode, 0, result.stderr)
        deadline = time.monotonic() + 20
        while True:
            result = yield self.ross("inspect", "checked")
            health = json.loads(result.stdout)[0]["State"].get("Health") or {}
            if health.get("Log"):
                break
            self.assertLess(time.monotonic(), deadline, "no health check ran")
            yield sleep(0.1)
        self.assertEqual(status_field(health["Log"][0]["Output"].encode(), "Seccomp"), "2")
