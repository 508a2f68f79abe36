# -*- test-case-name: ross.test.integration.test_cri_streaming -*-
"""
Exec and Attach on a SPDY session, Kubernetes' remotecommand protocol
v4: the client opens one stream per channel, named by its ``streamType``
header (error, stdin, stdout, stderr, and resize with a terminal); the
session starts once those the request asked for are all there. Output
goes out on stdout/stderr (a terminal's is all stdout), stdin's end
closes the process's input, resize carries JSON sizes
(``{"Width":W,"Height":H}``) one a line. At the end stdout and stderr
are finished, and the error stream carries a JSON metav1.Status: Success,
or Failure with reason NonZeroExitCode and the code as its ExitCode
cause, or Failure with a message.

A client that goes away detaches; an exec'd process it leaves is killed
(as containerd kills it), an attached container runs on.
"""

from __future__ import annotations

import json
import signal
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from ross.cri.streaming import ATTACH, EXEC, StreamTarget
from ross.engine.engine import Engine
from ross.engine.runtime.spec import ExecProcess
from ross.errors import RossError
from ross.protocols.shim import ContainerStartError
from ross.protocols.muxconn import Inbox, MuxConnection
from ross.protocols.spdy import PROTOCOL_ERROR, WRITE_CHUNK, SpdyStream

#: Seconds the client has to open its streams (kubelet's streamCreationTimeout).
STREAM_CREATION_TIMEOUT = 30.0
#: The longest line a resize stream may send.
MAX_RESIZE_LINE = 1024
KNOWN_STREAMS = ("error", "stdin", "stdout", "stderr", "resize")


def success_status() -> bytes:
    return json.dumps({"metadata": {}, "status": "Success"}).encode()


def exit_status(code: int, cmd: tuple[str, ...]) -> bytes:
    """
    The status of a command that exited non-zero (the client makes it
    its own exit code).
    """
    return json.dumps({
        "metadata": {}, "status": "Failure",
        "message": f"command terminated with non-zero exit code: command {list(cmd)[:8]} exited with {code}",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code & 0xFF)}]},
    }).encode()


def failure_status(message: str) -> bytes:
    return json.dumps({"metadata": {}, "status": "Failure", "message": message, "reason": "InternalError",
                       "code": 500}).encode()


def expected_streams(target: StreamTarget) -> set[str]:
    """
    The streams a client of C{target} opens (client-go's remotecommand).
    """
    expected = {"error"}
    if target.stdin:
        expected.add("stdin")
    if target.stdout:
        expected.add("stdout")
    if target.stderr and not target.tty:
        expected.add("stderr")
    if target.tty:
        expected.add("resize")
    return expected


class RemoteCommand:
    """
    One Exec or Attach over one SPDY session (or a WebSocket: see
    L{serve_websocket}).
    """

    _log = Logger()

    def __init__(self, reactor: Any, engine: Engine, target: StreamTarget, session: MuxConnection) -> None:
        self._reactor = reactor
        self._engine = engine
        self._target = target
        self._session = session
        self._expected = expected_streams(target)
        self._streams: dict[str, SpdyStream] = {}
        self._started = False
        self._attachment: Any = None
        self._exec_id = ""
        self._finished = False
        self._resize_buffer = b""
        #: The last terminal size the client sent, (rows, cols).
        self._size: tuple[int, int] | None = None
        self._timer = reactor.callLater(STREAM_CREATION_TIMEOUT, self._too_slow)
        session.when_lost(self._lost)

    def stream_opened(self, stream: SpdyStream) -> None:
        kind = stream.header("streamtype")
        if self._started or kind not in KNOWN_STREAMS or kind in self._streams:
            stream.cancel(PROTOCOL_ERROR)
            return
        self._streams[kind] = stream
        if self._expected <= set(self._streams):
            self._started = True
            if self._timer.active():
                self._timer.cancel()
            Deferred.fromCoroutine(self._run()).addErrback(
                lambda f: self._log.failure("streaming {kind} failed", f, kind=self._target.kind))

    def _too_slow(self) -> None:
        self._log.info("a streaming client opened {got} of {want} streams in time: closed",
                       got=sorted(self._streams), want=sorted(self._expected))
        self._session.close()

    # The session.

    def _output(self, kind: str, data: bytes) -> None:
        target = self._target
        if kind == "stderr" and target.stderr and not target.tty and "stderr" in self._streams:
            self._streams["stderr"].write(data)
        elif (kind == "stdout" or target.tty) and target.stdout and "stdout" in self._streams:
            self._streams["stdout"].write(data)

    async def _run(self) -> None:
        target = self._target
        # The client sends its terminal's size as it opens the streams:
        # what came already sizes the exec's terminal from its start.
        resize = self._streams.get("resize")
        if resize is not None:
            resize.listen(self._resize, lambda: None)
        initial = self._size
        try:
            if target.kind == EXEC:
                process = ExecProcess(args=target.cmd, tty=target.tty, open_stdin=target.stdin,
                                      console_size=initial or (24, 80))
                info, session = await self._engine.containers.exec(target.container_id, process, self._output,
                                                                   target.stdin)
                self._exec_id, self._attachment = info.id, session.attachment
            else:
                shim = self._engine.containers.running_shim(target.container_id)
                self._attachment = await shim.attach(self._output, stdin=target.stdin)
        except ContainerStartError as e:
            self._output("stderr", e.message.encode() + b"\n")
            self._finish(exit_status(e.exit_code, target.cmd))
            return
        except RossError as e:
            self._finish(failure_status(str(e)))
            return
        except Exception as e:
            # A bug or a shim gone wrong: the client is told, not left waiting.
            self._log.failure("could not start streaming {kind} in {id}", kind=target.kind, id=target.container_id)
            self._finish(failure_status(f"could not start the session: {e}"))
            return
        if self._session.closed:
            self._abandon()
            return
        attachment = self._attachment
        self._session.add_producer(attachment.producer)
        stdin = self._streams.get("stdin")
        if stdin is not None:
            stdin.listen(self._stdin, self._stdin_ended)
        if self._size is not None and (self._size != initial or target.kind == ATTACH):
            attachment.resize(*self._size).addErrback(lambda _: None)
        status = await attachment.done
        if target.kind == ATTACH:
            self._finish(success_status())
        elif status is None:
            self._finish(failure_status(f"lost the session of command {list(target.cmd)[:8]}"))
        elif status.exit_code == 0:
            self._finish(success_status())
        else:
            self._finish(exit_status(status.exit_code, target.cmd))

    def _stdin(self, data: bytes) -> None:
        if self._target.stdin and self._attachment is not None and not self._finished:
            self._attachment.write(data)

    def _stdin_ended(self) -> None:
        """
        The client's input ended. An exec'd process without a terminal
        sees its stdin close. An attached container with stdin_once and no
        terminal too (its output still comes, until it exits); otherwise
        the client is leaving (crictl's detach keys): the attachment ends,
        the container runs on (as containerd's).
        """
        if self._attachment is None or self._finished or not self._target.stdin:
            return
        if self._target.kind == EXEC:
            if not self._target.tty:
                self._attachment.close_stdin().addErrback(lambda _: None)
            return
        record = self._engine.containers.records.get(self._target.container_id)
        if record is not None and record.config.stdin_once and not record.config.tty:
            self._attachment.close_stdin().addErrback(lambda _: None)
        else:
            self._finish(success_status())

    def _resize(self, data: bytes) -> None:
        self._resize_buffer += data
        while b"\n" in self._resize_buffer:
            line, self._resize_buffer = self._resize_buffer.split(b"\n", 1)
            self._apply_size(line)
        if len(self._resize_buffer) > MAX_RESIZE_LINE:
            self._resize_buffer = b""
            self._streams["resize"].cancel(PROTOCOL_ERROR)

    def _apply_size(self, line: bytes) -> None:
        try:
            size = json.loads(line)
            cols, rows = int(size["Width"]), int(size["Height"])
        except (ValueError, TypeError, KeyError, RecursionError):
            self._log.info("a streaming client sent a bad terminal size: ignored")
            return
        if not (0 < rows < 65536 and 0 < cols < 65536) or self._finished:
            return
        self._size = (rows, cols)
        if self._attachment is not None:
            self._attachment.resize(rows, cols).addErrback(lambda _: None)

    # The end.

    def _finish(self, status: bytes) -> None:
        if self._finished:
            return
        self._finished = True
        for kind in ("stdout", "stderr"):
            stream = self._streams.get(kind)
            if stream is not None:
                stream.finish()
        error = self._streams["error"]
        error.write(status)
        error.finish()
        self._release()
        self._session.close()

    def _lost(self) -> None:
        """
        The client went away (or the session was closed).
        """
        if self._timer.active():
            self._timer.cancel()
        if self._finished:
            return
        self._finished = True
        self._abandon()

    def _abandon(self) -> None:
        exec_id = self._exec_id
        self._release()
        if exec_id:
            shim = self._engine.containers.supervisor.shims.get(self._target.container_id)
            info = self._engine.containers.sessions.execs.get(exec_id)
            if shim is not None and info is not None and info.exit is None:
                shim.kill(signal.SIGKILL, session=exec_id).addErrback(lambda _: None)

    def _release(self) -> None:
        attachment, self._attachment = self._attachment, None
        if attachment is not None:
            self._session.remove_producer(attachment.producer)
            attachment.detach()


#: remotecommand's channel numbers on a WebSocket (v4.channel.k8s.io,
#: v5.channel.k8s.io): a message's first byte; v5's 255 closes the
#: channel named by the second.
CHANNELS = {"stdin": 0, "stdout": 1, "stderr": 2, "error": 3, "resize": 4}
CLOSE_CHANNEL = 255


class WebSocketChannel:
    """
    One of remotecommand's channels on a WebSocket, as a stream: what
    L{RemoteCommand} needs of a SPDY stream. The end of our direction is
    the end of the WebSocket.
    """

    def __init__(self, websocket: Any, kind: str) -> None:
        self._websocket = websocket
        self._kind = kind
        self._prefix = bytes((CHANNELS[kind],))
        self.reset = False
        self._inbox = Inbox()
        self._on_end: Any = None
        self._ended = False

    def header(self, name: str) -> str:
        return self._kind if name.lower() == "streamtype" else ""

    def listen(self, on_data: Any, on_end: Any, on_reset: Any = None) -> None:
        self._on_end = on_end
        self._inbox.open(on_data)
        if self._ended:
            on_end()

    def write(self, data: bytes) -> None:
        for i in range(0, len(data), WRITE_CHUNK):
            self._websocket.send_message(self._prefix + data[i:i + WRITE_CHUNK])

    def finish(self) -> None:
        pass

    def cancel(self, status: int = 0) -> None:
        self.reset = True

    def received(self, data: bytes) -> None:
        if not self._ended and not self._inbox.put(data):
            self._websocket.close()

    def ended(self) -> None:
        if not self._ended:
            self._ended = True
            if self._on_end is not None:
                self._on_end()


def serve_websocket(command: RemoteCommand, websocket: Any, target: StreamTarget) -> Any:
    """
    Give C{command} its channels on C{websocket} (all at once: a
    WebSocket's are there from the start); returns what the WebSocket's
    messages go to.
    """
    channels = {kind: WebSocketChannel(websocket, kind) for kind in expected_streams(target)}
    by_number = {CHANNELS[kind]: channel for kind, channel in channels.items()}

    def on_message(message: bytes) -> None:
        if not message:
            return
        number, data = message[0], message[1:]
        if number == CLOSE_CHANNEL:
            if data and data[0] in by_number:
                by_number[data[0]].ended()
            return
        channel = by_number.get(number)
        if channel is not None and number in (CHANNELS["stdin"], CHANNELS["resize"]):
            channel.received(data)

    for channel in channels.values():
        command.stream_opened(channel)  # type: ignore[arg-type]
    return on_message
