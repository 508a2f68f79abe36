"""
The engine's contracts. Fakes and real drivers implement the same interface
and are checked with C{verifyObject}; each interface has one conformance
suite (under ross/test/) run against every implementation.

Every method that touches the disk or the kernel returns a Deferred and does
its blocking work off the reactor thread.
"""

from __future__ import annotations

import builtins
from typing import TYPE_CHECKING, Any, Callable, Collection, Iterable, Mapping, Sequence

from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    from pathlib import Path

    from twisted.internet.defer import Deferred

    from ross.engine.content.store import BlobInfo, Writer
    from ross.engine.images.catalog import Image, ImageSummary
    from ross.engine.layers.apply import LayerResult
    from ross.engine.layers.diff import DiffResult, LayerSink
    from ross.engine.layers.stream import Readable
    from ross.engine.records import Mount
    from ross.engine.runtime.runtime import Attachment, ContainerStats, ExecSession, ExitStatus, ShimState
    from ross.engine.runtime.spec import ContainerSpec, ExecProcess
    from ross.engine.snapshots.records import SnapshotInfo, Usage

# ---------------------------------------------------------------- storage


class IContentStore(Interface):
    """
    Blobs addressed by digest under C{<root>/content/blobs/sha256/<hex>}. A
    blob becomes visible only once its bytes were verified against its
    digest, fsync'd and renamed into place; a partial ingest (a temporary
    file under C{<root>/content/ingest/}) is never visible, and a mismatch
    removes it and fails with DataLoss. Reads of small blobs are checked
    again, so a blob changed on disk is never used (DataLoss).
    Implemented by L{ross.engine.content.store.ContentStore}; its blocking
    core, for code already in a thread, is its C{blobs} (a BlobStore).
    """

    def info(digest: str) -> Deferred[BlobInfo]:
        """
        Deferred[BlobInfo(digest, size)]; NotFound; InvalidArgument for a
        malformed digest.
        """

    def path(digest: str) -> Path:
        """
        Filesystem path of a committed blob (blobs are immutable; read it in
        a thread). Raises NotFound.
        """

    def writer(expected_digest: str | None = None, expected_size: int | None = None) -> Writer:
        """
        A new ingest, used from one thread (blocking): C{write(bytes)},
        C{close()}, C{commit(lease=None)} -> BlobInfo verifying
        C{expected_digest}/C{expected_size} when given (DataLoss on
        mismatch, the temporary file removed), and C{abort()}.
        """

    def write(data: bytes, expected_digest: str | None = None) -> Deferred[BlobInfo]:
        """
        Deferred[BlobInfo]: ingest a small blob held in memory.
        """

    def read(digest: str) -> Deferred[bytes]:
        """
        Deferred[bytes] of a small blob, verified (DataLoss when corrupt).
        """

    def delete(digest: str) -> Deferred[None]:
        """
        Deferred: remove a blob. NotFound when it is not there.
        """

    def list() -> Deferred[builtins.list[BlobInfo]]:
        """
        Deferred firing with every committed blob's BlobInfo, by digest.
        """

    def collect(referenced: Callable[[], Iterable[str]]) -> Deferred[builtins.list[BlobInfo]]:
        """
        Deferred[list[BlobInfo]]: remove every blob that neither
        C{referenced()} (called under the collection lock) nor an open lease
        holds; what was removed.
        """


class ISnapshotter(Interface):
    """
    containerd's snapshotter (L{ross.engine.snapshots.OverlaySnapshotter}):
    active snapshots (keys) are writable, committed snapshots (names) are
    read-only parents, views are read-only actives; keys and names share
    one namespace; C{parent} is always a committed name. Prepare and View
    return L{ross.engine.records.Mount}s with absolute paths and mount
    nothing (the runtime performs them in the container's mount namespace).
    Metadata changes happen in one transaction each; a crash leaves the old
    or the new state, and at worst orphaned directories for C{cleanup}.

    In-use marking: the container manager calls C{hold(key, container_id)}
    on the active snapshot a container runs on (it sets the label
    C{ross.io/in-use}); until C{release(key, container_id)}, C{remove} and
    C{commit} of that snapshot fail with FailedPrecondition.
    """

    name = Attribute("Snapshotter name, e.g. 'overlayfs'.")

    def prepare(key: str, parent: str = "", labels: Mapping[str, str] | None = None) -> Deferred[builtins.list[Mount]]:
        """
        Deferred[list[Mount]]: a new active snapshot on C{parent}.
        AlreadyExists; NotFound (parent); FailedPrecondition (parent not
        committed, or a chain too deep for the one-page mount data limit);
        InvalidArgument (empty key).
        """

    def view(key: str, parent: str = "", labels: Mapping[str, str] | None = None) -> Deferred[builtins.list[Mount]]:
        """Deferred[list[Mount]]: a read-only view of C{parent}; errors as prepare."""

    def mounts(key: str) -> Deferred[builtins.list[Mount]]:
        """
        Deferred[list[Mount]] of an active snapshot or view; NotFound;
        FailedPrecondition for a committed snapshot.
        """

    def commit(name: str, key: str, labels: Mapping[str, str] | None = None) -> Deferred[None]:
        """
        Deferred: active C{key} becomes committed C{name} with C{labels}
        (the active's labels are not kept). NotFound; AlreadyExists (name);
        FailedPrecondition (a view, or held in use).
        """

    def remove(key: str) -> Deferred[None]:
        """
        Deferred; NotFound; FailedPrecondition when it has children or is
        held in use.
        """

    def stat(key: str) -> Deferred[SnapshotInfo]:
        """Deferred[SnapshotInfo]; NotFound."""

    def list(filters: Iterable[str] = ()) -> Deferred[builtins.list[SnapshotInfo]]:
        """
        Deferred[list[SnapshotInfo]] matching every containerd-style filter
        ("kind==committed", "parent==X", "labels.k==v", "name~=regex");
        InvalidArgument for a malformed filter.
        """

    def update(key: str, labels: Mapping[str, str | None]) -> Deferred[SnapshotInfo]:
        """Deferred[SnapshotInfo]: set labels (str) or delete them (None)."""

    def hold(key: str, holder: str) -> Deferred[SnapshotInfo]:
        """Deferred[SnapshotInfo]: mark in use by C{holder}; FailedPrecondition if another holds it."""

    def release(key: str, holder: str) -> Deferred[SnapshotInfo]:
        """Deferred[SnapshotInfo]: undo C{hold} by C{holder} (no-op otherwise)."""

    def usage(key: str) -> Deferred[Usage]:
        """Deferred[Usage] (bytes, inodes) of the snapshot's own layer."""

    def cleanup() -> Deferred[int]:
        """Deferred[int]: removes directories no record owns."""


class IApplier(Interface):
    """
    Extracts layers into snapshots: containerd keeps this apart from the
    snapshotter (its diff service's Applier), which only hands out mounts.
    Provided by L{ross.engine.snapshots.OverlaySnapshotter}, which knows
    where a snapshot's files live.
    """

    def apply_layer(key: str, blob: str | Path | Readable, digest: bool = True) -> Deferred[LayerResult]:
        """
        Deferred[LayerResult (diff_id, size, compression, entries)]: extract
        the layer C{blob} (gzip, zstd or plain, detected), a file or a
        stream read to its end, into active snapshot C{key}, OCI whiteouts
        as overlay whiteouts, paths jailed in the snapshot; the diff ID is
        empty without C{digest}. InvalidArgument for corrupt layers; an
        empty snapshot is left empty on failure.
        """


class IComparer(Interface):
    """
    Writes a snapshot's changes as a layer: containerd's Comparer, kept
    apart from the snapshotter as L{IApplier} is.
    """

    def diff(key: str, sink: LayerSink, compression: str = "gzip",
             exclude: Collection[str] = (), tap: LayerSink | None = None) -> Deferred[DiffResult]:
        """
        Deferred[DiffResult (digest, size, diff_id, media_type)]: write the
        changes of C{key} against its parent as a layer tar to C{sink}
        (C{write(bytes)}, called from one worker thread), without the
        relative paths of C{exclude} (and what is under them); the
        uncompressed tar to C{tap} as well (its C{write} never raises).
        """


class IImageStore(Interface):
    """
    Image records: reference name -> target descriptor (a manifest or an
    index), over the content store. Unpacking creates committed snapshots
    named by chain ID, so a layer shared by several images is extracted
    once. Implemented by L{ross.engine.images.store.ImageStore}.
    """

    in_use = Attribute(
        "None or a callable returning {image ID: [ImageUser(container_id, running)]}: "
        "rmi and prune refuse to delete images containers use."
    )

    def resolve(name: str) -> Deferred[Image]:
        """
        Deferred[Image] for a reference ("busybox" is
        docker.io/library/busybox:latest; "repo@sha256:..."), a full image ID
        or a unique ID prefix: C{id}, C{names}, C{target}, C{manifest},
        C{config} (C{config.config}: env, cmd, entrypoint, working_dir,
        user, exposed_ports, labels, stop_signal, volumes), C{layers},
        C{chain_ids}, C{chain_id}. NotFound ("No such image:
        busybox:latest"); InvalidArgument for a malformed reference.
        """

    def list(all: bool = False, filters: Sequence[tuple[str, str]] = ()) -> Deferred[builtins.list[ImageSummary]]:
        """Deferred[list[ImageSummary]], newest first."""

    def ensure_unpacked(image: Image) -> Deferred[str]:
        """
        Deferred[str]: chain ID of the top layer once every layer is
        extracted (each once, concurrent callers wait for each other); the
        parent of a container's active snapshot.
        """

    def commit(base: Image, write_layer: Callable[[LayerSink, LayerSink], Deferred[DiffResult]],
               config: Mapping[str, Any], container_id: str, created_by: str = "", comment: str = "",
               author: str = "", changes: Sequence[str] = (), reference: str = "") -> Deferred[str]:
        """
        Deferred[str]: ID of a new image of C{base}'s layers plus the one
        C{write_layer(sink, tap)} writes (sink.write from one thread, the
        compressed layer; tap.write from that thread or another, the
        uncompressed tar, which is extracted as it comes; fires with a
        DiffResult), with the OCI "config" object C{config} after
        C{changes} (--change instructions), one more history step, named
        C{reference} or dangling (docker commit). InvalidArgument for a bad
        reference or change before C{write_layer} is called; a failure or
        cancellation leaves nothing behind.
        """


# ---------------------------------------------------------------- runtime


class IRuntime(Interface):
    """
    Runs containers through per-container shims
    (L{ross.engine.runtime.runtime.Runtime}). The daemon never sets up
    namespaces, mounts or cgroups itself: the shim (an exec'd process that
    detaches from the daemon) does, owns the container's stdio, writes its
    log and records its exit status, so containers outlive the daemon.
    """

    def create(spec: ContainerSpec) -> Deferred[IShim]:
        """
        Spawn a shim for C{spec} (a L{ross.engine.runtime.spec.ContainerSpec})
        and set the container up, stopping right before its command runs:
        Deferred[IShim] (status "created"). Attach now to see every byte,
        then C{IShim.start}. Fails with InvalidArgument (bad spec),
        AlreadyExists (a live shim), ContainerStartError (125, set-up failed).
        """

    def check(spec: ContainerSpec) -> Deferred[None]:
        """
        Deferred firing once C{spec} is known to be one C{create} accepts
        (its seccomp profile compiles); InvalidArgument otherwise.
        """

    def start(spec: ContainerSpec) -> Deferred[IShim]:
        """
        C{create} then C{IShim.start}: Deferred[IShim] once the command runs;
        fails with C{ContainerStartError} (C{exit_code} 125/126/127, docker's
        message) when it could not start.
        """

    def reconnect(container_id: str) -> Deferred[IShim | ExitStatus]:
        """
        Deferred[IShim | ExitStatus]: after a daemon restart, the running
        shim of a container, or the exit status it recorded if it is gone.
        NotFound when there is no state for it.
        """

    def delete(container_id: str) -> Deferred[None]:
        """
        Deferred: remove what a finished run left (stray processes, cgroup
        directories, the state directory). FailedPrecondition while the
        shim lives; idempotent.
        """


class IShim(Interface):
    """
    The daemon's handle on one container's shim
    (L{ross.engine.runtime.runtime.ShimHandle}). Requests fail with
    FailedPrecondition once the container exited.
    """

    id = Attribute("The container ID.")
    pid = Attribute("Host PID of the container's PID 1.")
    shim_pid = Attribute("Host PID of the shim.")
    status = Attribute('"created", "running", "paused" or "stopped", as last known.')
    exit_status = Attribute("The ExitStatus once known, else None.")
    started_ns = Attribute("When its command started, ns since the epoch (0 when not started or not known).")
    exited = Attribute(
        "Deferred firing with the ExitStatus once PID 1 exited (its output "
        "logged); fails with ShimDetached after close().")
    execs = Attribute(
        "The exec sessions the shim held when a restarted daemon reconnected "
        "to it: ID -> {pid, running, exit, tty, args} (empty otherwise).")

    def start() -> Deferred[int]:
        """Deferred[int]: exec the command of a created container; its PID."""

    def wait() -> Deferred[ExitStatus]:
        """A new Deferred[ExitStatus] per call."""

    def state() -> Deferred[ShimState]:
        """Deferred[ShimState]: status, pid, exec sessions, exit."""

    def kill(signal: int, all: bool = False, session: str = "") -> Deferred[None]:
        """
        Deferred: signal PID 1 (all: every process of the container;
        session: the process group of that exec session instead).
        """

    def pause() -> Deferred[None]:
        """Deferred: freeze every process of the container."""

    def resume() -> Deferred[None]:
        """Deferred: thaw."""

    def update(resources: Mapping[str, int]) -> Deferred[None]:
        """
        Deferred: new cgroup limits for the running container (memory,
        memory_swap, nano_cpus, cpu_shares, pids_limit; 0 leaves one as it
        is).
        """

    def stats() -> Deferred[ContainerStats]:
        """Deferred[ContainerStats]: cgroup and network counters."""

    def reopen_log() -> Deferred[None]:
        """
        Deferred[None]: the log is written to a new file at its path (the
        old one was moved away: kubelet's rotation).
        """

    def attach(on_output: Callable[[str, bytes], None], session: str = "", stdin: bool = False,
               replay: bool = False, since: int | None = None, input_id: str = "") -> Deferred[Attachment]:
        """
        Deferred[Attachment] on a connection of its own: output of the main
        process (or exec session C{session}) to C{on_output(stream, data)};
        C{replay} sends a PTY's scrollback first. C{since}: the client
        re-attaches holding that many bytes of a PTY session's output; only
        what follows them comes, and an ended session gives its exit status.
        The Attachment's C{offset} is where its output begins; with
        C{input_id} (the client's name for its input), its C{input_offset}
        is how many bytes of that input the session took in so far.
        """

    def attach_direct(session: str = "", stdin: bool = False, replay: bool = False,
                      window: tuple[int, int] = (0, 0), since: int | None = None,
                      input_id: str = "") -> Deferred[Any]:
        """
        Deferred[DirectAttach]: a direct channel to the main process (or
        exec C{session}), for a client (or the daemon's relay) to hold: its
        output, input, resize and end of input, and nothing else of the
        shim (SPEC 3); C{since} and C{input_id} as L{attach}'s, and the
        offsets its answer gave.
        """

    def exec(exec_id: str, process: ExecProcess, on_output: Callable[[str, bytes], None] | None = None,
             stdin: bool = False, direct: bool = False, input_id: str = "") -> Deferred[ExecSession]:
        """
        Deferred[ExecSession]: a new process in the container's namespaces
        and cgroups, attached from its first byte when C{on_output} is given
        (its input named C{input_id}, as L{attach}'s), or, with C{direct},
        on the session's direct C{channel}.
        """

    def wait_exec(exec_id: str) -> Deferred[ExitStatus]:
        """Deferred[ExitStatus] of an exec session."""

    def resize(rows: int, cols: int, session: str = "") -> Deferred[None]:
        """Deferred: the terminal size of the main process or an exec session."""

    def close_stdin(session: str = "") -> Deferred[None]:
        """Deferred: end of input for the session's stdin pipe."""

    def close() -> None:
        """Let go of the shim (daemon stopping); the container runs on."""
