# -*- test-case-name: ross.test.integration.test_registry -*-
"""
Moving blob bytes between the network and the content store without
blocking the reactor.

L{Download}: a blob's body goes into a content-store ingest; the bytes are
gathered into ~1 MiB pieces on the reactor and written (and hashed) in the
thread pool one piece at a time, the connection paused while too much
waits. A connection cut mid-body keeps what arrived and asks for the rest
with C{Range} (a registry that ignores it starts the blob again); the blob
becomes visible only when its digest and size match.

L{FileProducer}: part of a stored blob, read in the thread pool, as a
request body.
"""

from __future__ import annotations

from typing import BinaryIO, Callable

import attrs
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IConsumer, IReactorThreads
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import IBodyProducer, IResponse
from zope.interface import implementer

from ross.engine.content.store import CHUNK, BlobInfo, BlobStore, Lease, Writer
from ross.engine.pipes import in_pool
from ross.engine.records import Descriptor
from ross.engine.registry.client import Session, Unreachable, describe_failure, discard, is_connection_cut
from ross.errors import DataLoss, Unavailable

#: Bytes waiting for the disk before the connection is paused.
HIGH_WATER = 8 * CHUNK

#: Cuts of one blob's download answered by resuming it.
MAX_RESUMES = 5


class _Cut(Exception):
    """The body ended early: the connection broke."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(describe_failure(failure))
        self.failure = failure


class _Sink(Protocol):
    """
    Receives one response body into C{writer}: pieces written in the
    thread pool in order, the transport paused above L{HIGH_WATER}.
    C{done} fires once every received byte is written: with None at the
    end of the body, with L{_Cut} when the connection broke, with the
    write's error when the disk failed.
    """

    def __init__(self, reactor: IReactorThreads, session: Session, writer: Writer, limit: int,
                 progress: Callable[[int], None]) -> None:
        self._reactor = reactor
        self._session = session
        self._writer = writer
        self._limit = limit
        self._progress = progress
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._writing = False
        self._paused = False
        self._ended: Failure | None = None
        self._error: Failure | None = None
        self.done: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        assert self.transport is not None
        self._session.receiving(self.transport)  # type: ignore[arg-type]

    def dataReceived(self, data: bytes) -> None:
        if self._error is not None:
            return
        if self._writer.size + self._buffered + len(data) > self._limit:
            self._fail(Failure(DataLoss(
                f"blob {self._writer.expected} is larger than its descriptor says ({self._limit} bytes)")))
            return
        self._buffer.append(data)
        self._buffered += len(data)
        if self._buffered >= CHUNK:
            self._flush()
        if self._buffered >= HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pauseProducing()  # type: ignore[attr-defined]

    def connectionLost(self, reason: Failure = Failure(ResponseDone())) -> None:
        if self.transport is not None:
            self._session.received(self.transport)  # type: ignore[arg-type]
        self._ended = reason
        self._flush()

    def _fail(self, failure: Failure) -> None:
        if self._error is None:
            self._error = failure
            self._buffer.clear()
            self._buffered = 0
            if self.transport is not None:
                self.transport.stopProducing()  # type: ignore[attr-defined]
        self._finish()

    def _flush(self) -> None:
        if self._writing:
            return
        if self._error is not None or not self._buffer:
            self._finish()
            return
        if self._buffered < CHUNK and self._ended is None:
            return
        piece = b"".join(self._buffer)
        self._buffer.clear()
        self._buffered = 0
        self._writing = True
        d = in_pool(self._reactor, self._writer.write, piece)

        def written(_: object) -> None:
            self._writing = False
            self._progress(self._writer.size)
            if self._paused and self._buffered < HIGH_WATER // 2 and self.transport is not None:
                self._paused = False
                self.transport.resumeProducing()  # type: ignore[attr-defined]
            self._flush()

        def failed(f: Failure) -> None:
            self._writing = False
            self._fail(f)

        d.addCallbacks(written, failed)

    def _finish(self) -> None:
        if self._writing or self.done.called:
            return
        if self._error is not None:
            if self._ended is None:
                return
            self.done.errback(self._error)
            return
        if self._ended is None or self._buffer:
            return
        reason = self._ended
        if reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(None)
        elif self._session.aborted:
            self.done.errback(CancelledError("the download was cancelled"))
        elif is_connection_cut(reason):
            self.done.errback(_Cut(reason))
        else:
            self.done.errback(reason)


@attrs.define
class Download:
    """
    One blob download in progress: C{writer} holds what arrived so far.
    """

    reactor: IReactorThreads
    blobs: BlobStore
    session: Session
    desc: Descriptor
    progress: Callable[[int], None]
    writer: Writer | None = None

    async def run(self, lease: Lease) -> BlobInfo:
        """
        Download, verify and commit the blob under C{lease}; its ingest is
        gone whatever happens.
        """
        self.writer = await in_pool(self.reactor, self.blobs.writer, self.desc.digest, self.desc.size)
        try:
            cuts = 0
            while True:
                try:
                    await self._fetch()
                    break
                except _Cut as cut:
                    cuts += 1
                    if cuts > MAX_RESUMES:
                        raise Unavailable(
                            f"downloading {self.desc.digest}: {cut} ({cuts} times, giving up)") from None
            writer = self.writer
            info: BlobInfo = await in_pool(self.reactor, writer.commit, lease)
            return info
        except BaseException:
            await in_pool(self.reactor, self.writer.abort)
            raise

    async def _fetch(self) -> None:
        writer = self.writer
        assert writer is not None
        offset = writer.size
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        try:
            response: IResponse = await self.session.request(
                "GET", self.session.repo_url(f"blobs/{self.desc.digest}"), headers=headers, ok=(200, 206),
                not_found=f"blob {self.desc.digest} of {self.session.domain}/{self.session.repository}")
        except Unreachable as e:
            if is_connection_cut(e.failure):
                raise _Cut(e.failure) from None
            raise
        if offset and not _resumes_at(response, offset):
            if response.code != 200:
                discard(response)
                raise DataLoss(f"blob {self.desc.digest}: the registry answered a request for the bytes "
                               f"from {offset} on with another range")
            # The registry sent the whole blob again: start it again.
            await in_pool(self.reactor, writer.abort)
            writer = self.writer = await in_pool(self.reactor, self.blobs.writer, self.desc.digest, self.desc.size)
        sink = _Sink(self.reactor, self.session, writer, self.desc.size, self.progress)
        response.deliverBody(sink)  # type: ignore[no-untyped-call]
        await sink.done


def _resumes_at(response: IResponse, offset: int) -> bool:
    if response.code != 206:
        return False
    ranges = response.headers.getRawHeaders("content-range", [])
    if not ranges:
        return False
    value = ranges[0].strip()
    if not value.startswith("bytes "):
        return False
    start, _, _ = value[len("bytes "):].partition("-")
    return bool(start.strip() == str(offset))


@implementer(IBodyProducer)
class FileProducer:
    """
    C{length} bytes of a stored blob from C{offset} as a request body, read
    in the thread pool. (The registry checks the digest of the whole once
    every piece is there.)
    """

    def __init__(self, reactor: IReactorThreads, blobs: BlobStore, digest: str, offset: int, length: int,
                 progress: Callable[[int], None] | None = None) -> None:
        self._reactor = reactor
        self._blobs = blobs
        self._digest = digest
        self._offset = offset
        self.length = length
        self._progress = progress
        self._paused: Deferred[None] | None = None
        self._stopped = False

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        return Deferred.fromCoroutine(self._produce(consumer))

    async def _produce(self, consumer: IConsumer) -> None:
        source = await in_pool(self._reactor, self._open)
        try:
            remaining = self.length
            sent = 0
            while remaining > 0:
                data: bytes = await in_pool(self._reactor, source.read, min(CHUNK, remaining))
                if not data:
                    raise DataLoss(f"blob {self._digest} is shorter than its recorded size")
                if self._stopped:
                    raise CancelledError("upload stopped")
                consumer.write(data)
                remaining -= len(data)
                sent += len(data)
                if self._progress is not None:
                    self._progress(sent)
                if self._paused is not None:
                    await self._paused
                if self._stopped:
                    raise CancelledError("upload stopped")
        finally:
            await in_pool(self._reactor, source.close)

    def _open(self) -> BinaryIO:
        f = open(self._blobs.path(self._digest), "rb")
        f.seek(self._offset)
        return f

    def pauseProducing(self) -> None:
        if self._paused is None:
            self._paused = Deferred()

    def resumeProducing(self) -> None:
        paused, self._paused = self._paused, None
        if paused is not None:
            paused.callback(None)

    def stopProducing(self) -> None:
        self._stopped = True
        self.resumeProducing()
