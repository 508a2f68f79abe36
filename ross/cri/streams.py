# -*- test-case-name: ross.test.integration.test_cri_streaming -*-
"""
Exec, Attach and PortForward of runtime.v1.RuntimeService: each checks
its request and answers with a one-time URL on the streaming server
(L{ross.cri.streaming}), where the client then gets its streams.
"""

from __future__ import annotations

from ross.cri.meta import CONTAINER, SANDBOX
from ross.cri.sandboxes import find
from ross.cri.streaming import ATTACH, EXEC, PORTFORWARD, StreamServer, StreamTarget
from ross.cri.v1 import api_pb2
from ross.engine.containers.config import validate_exec
from ross.engine.engine import Engine
from ross.engine.runtime.spec import ExecProcess
from ross.errors import FailedPrecondition, InvalidArgument, Unavailable
from ross.protocols.bridge import CallInfo

#: Bounds on what an Exec names: the command waits in the streaming server's
#: table until its client comes.
MAX_ARGS = 4096
MAX_ARGS_BYTES = 1024 * 1024


def _check_streams(what: str, tty: bool, stdin: bool, stdout: bool, stderr: bool) -> None:
    if not (stdin or stdout or stderr):
        raise InvalidArgument(f"{what}: one of stdin, stdout or stderr must be set")
    if tty and stderr:
        raise InvalidArgument(f"{what}: tty and stderr cannot both be set (a terminal has one output)")


class StreamAPI:
    """
    The streaming RPCs of runtime.v1.RuntimeService; C{streams} is the
    streaming server (None: not served, and these fail UNAVAILABLE).
    """

    def __init__(self, engine: Engine, streams: StreamServer | None) -> None:
        self._engine = engine
        self._streams = streams

    def _server(self) -> StreamServer:
        if self._streams is None:
            raise Unavailable("this daemon serves no CRI streams (no streaming server)")
        return self._streams

    def _running(self, kind: str, ref: str) -> str:
        record, _ = find(self._engine, kind, ref)
        if not record.state.running or record.state.status == "paused":
            what = "pod sandbox" if kind == SANDBOX else "container"
            raise FailedPrecondition(f"{what} {record.id} is not running ({record.state.status})")
        return record.id

    async def Exec(self, request: api_pb2.ExecRequest, call: CallInfo) -> api_pb2.ExecResponse:
        server = self._server()
        cmd = tuple(request.cmd)
        # Checked as the engine checks it when the session starts, so the
        # client hears of a bad command now rather than on the stream.
        validate_exec(ExecProcess(args=cmd))
        if not cmd[0]:
            raise InvalidArgument("Exec: no command given")
        if len(cmd) > MAX_ARGS or sum(len(a) for a in cmd) > MAX_ARGS_BYTES:
            raise InvalidArgument("Exec: the command is too long")
        _check_streams("Exec", request.tty, request.stdin, request.stdout, request.stderr)
        cid = self._running(CONTAINER, request.container_id)
        url = server.url_for(StreamTarget(EXEC, cid, cmd, request.tty, request.stdin, request.stdout,
                                          request.stderr))
        return api_pb2.ExecResponse(url=url)

    async def Attach(self, request: api_pb2.AttachRequest, call: CallInfo) -> api_pb2.AttachResponse:
        server = self._server()
        _check_streams("Attach", request.tty, request.stdin, request.stdout, request.stderr)
        cid = self._running(CONTAINER, request.container_id)
        url = server.url_for(StreamTarget(ATTACH, cid, (), request.tty, request.stdin, request.stdout,
                                          request.stderr))
        return api_pb2.AttachResponse(url=url)

    async def PortForward(self, request: api_pb2.PortForwardRequest,
                          call: CallInfo) -> api_pb2.PortForwardResponse:
        server = self._server()
        for port in request.port:
            if not 0 < port < 65536:
                raise InvalidArgument(f"PortForward: invalid port {port}")
        sandbox_id = self._running(SANDBOX, request.pod_sandbox_id)
        return api_pb2.PortForwardResponse(url=server.url_for(StreamTarget(PORTFORWARD, sandbox_id)))
