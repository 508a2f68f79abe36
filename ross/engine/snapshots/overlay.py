# -*- test-case-name: ross.test.integration.test_overlay_snapshotter -*-
"""
The overlay snapshotter: containerd's snapshot model over overlayfs.

Layout under its state directory (C{<root>/snapshots/overlayfs}):

    metadata.db            SQLite (WAL): records, parents, labels
    snapshots/<id>/fs      the snapshot's files (an overlay upper dir)
    snapshots/<id>/work    overlay work dir (active snapshots only)

Directory IDs are short integers so that the overlay mount data of a deep
chain stays within the kernel's one-page limit.

Crash safety (SIGKILL at any point leaves the old or the new state):
  - prepare/view build the directory under a temporary name (C{new-*}),
    then in one transaction insert the record and rename the directory to
    its ID; the transaction commits last. A crash before the commit leaves
    only a directory no record owns.
  - remove deletes the record in one transaction, then renames the
    directory aside (C{rm-*}) and deletes it. A crash after the commit
    leaves only an orphan.
  - commit and label changes touch only the database.
  Orphans are what L{OverlaySnapshotter.cleanup} removes.

Every blocking step runs on the snapshotter's own small thread pool; the
methods return Deferreds and never block the reactor.
"""

from __future__ import annotations

import builtins
import os
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Collection, Iterable, Mapping, TypeVar

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from ross.engine.events import EventBus
from ross.engine.fsutil import disk_usage, fsync_dir, private_children, private_dir, remove_tree
from ross.engine.layers import DiffResult, LayerResult, apply_layer, write_diff
from ross.engine.layers.diff import LayerSink
from ross.engine.layers.stream import Readable
from ross.engine.pipes import in_thread
from ross.engine.records import Mount
from ross.engine.snapshots.filters import parse_filters
from ross.engine.snapshots.metastore import MetaStore, Record
from ross.engine.snapshots.records import Kind, SnapshotInfo, Usage
from ross.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from ross.interfaces import IApplier, IComparer, ISnapshotter

T = TypeVar("T")

#: The kernel copies at most one page of mount data, NUL included.
MOUNT_DATA_LIMIT = 4095

_OVERLAY_PARAMETERS = Path("/sys/module/overlay/parameters")
# Features that make an upper directory something other than a plain diff;
# turned off explicitly in the mount options when the module enables them.
_PLAIN_DIFF_FEATURES = ("redirect_dir", "index", "metacopy")


def _feature_options(parameters: Path = _OVERLAY_PARAMETERS) -> tuple[str, ...]:
    options = []
    for feature in _PLAIN_DIFF_FEATURES:
        try:
            value = (parameters / feature).read_text().strip()
        except OSError:
            continue
        if value not in ("N", "off", "0"):
            options.append(f"{feature}=off")
    return tuple(options)


def validate_key(key: str, what: str = "key") -> None:
    """
    InvalidArgument unless C{key} is a usable snapshot key or name.
    """
    if not key:
        raise InvalidArgument(f"Snapshot {what} must not be empty")
    if len(key) > 1024 or "\x00" in key or "\n" in key:
        raise InvalidArgument(f"Invalid snapshot {what}: {key[:64]!r}")


@implementer(ISnapshotter, IApplier, IComparer)
class OverlaySnapshotter:
    """
    containerd-style snapshotter on overlayfs; also the applier and
    comparer of its snapshots, whose directories only it knows.

    @param reactor: the reactor Deferreds fire in.
    @param state_dir: C{<root>/snapshots/overlayfs}.
    @param events: the event bus told of every change, or None.
    @param threads: size of the worker pool.
    """

    name = "overlayfs"
    _log = Logger()

    def __init__(self, reactor: IReactorFromThreads, state_dir: Path, events: EventBus | None = None,
                 threads: int = 4) -> None:
        self._reactor = reactor
        self.state_dir = Path(state_dir)
        self.snapshots_dir = self.state_dir / "snapshots"
        self._events = events
        self._meta = MetaStore(self.state_dir / "metadata.db")
        self._pool = ThreadPool(minthreads=0, maxthreads=threads, name="ross-snapshots")
        self._in_flight: set[str] = set()
        self._in_flight_lock = threading.Lock()
        self._feature_options = _feature_options()
        self._started = False

    # ---------------------------------------------------------------- life

    def start(self) -> Deferred[None]:
        """
        Start the worker pool, open the database (creating the layout) and
        remove what a crash may have left: directories no record owns.
        """
        if not self._started:
            self._pool.start()
            self._started = True
        d = self.run(self._open).addCallback(self._cleaned)
        return d.addCallback(lambda _: None)

    def _open(self) -> int:
        private_dir(self.state_dir)
        private_children(self.snapshots_dir)
        return self._cleanup_sync()

    def stop(self) -> Deferred[None]:
        """
        Wait for running work, stop the pool and close the database.
        """
        if self._started:
            self._started = False
            self._pool.stop()
            self._meta.close()
        return succeed(None)

    def run(self, fn: Callable[..., T], *args: object) -> Deferred[T]:
        """
        Run blocking C{fn(*args)} on the snapshotter's worker pool (also for
        callers' storage work around it, like looking up a blob's path).
        """
        return deferToThreadPool(self._reactor, self._pool, fn, *args)

    def _publish(self, action: str, actor: str, **attributes: str) -> None:
        if self._events is not None:
            self._events.publish("snapshot", action, actor, snapshotter=self.name, **attributes)

    # ---------------------------------------------------------------- paths

    def _dir(self, snapshot_id: int) -> str:
        return f"{self.snapshots_dir}/{snapshot_id}"

    def fs_path(self, snapshot_id: int) -> str:
        return f"{self.snapshots_dir}/{snapshot_id}/fs"

    def _mounts(self, record: Record) -> list[Mount]:
        kind = record.info.kind
        parents = [self.fs_path(i) for i in record.parent_ids]
        own = self.fs_path(record.id)
        if kind is Kind.COMMITTED:
            raise FailedPrecondition(
                f"Snapshot {record.info.name} is committed; only active snapshots and views have mounts"
            )
        if not parents:
            return [Mount(type="bind", source=own, options=("rbind", "rw" if kind is Kind.ACTIVE else "ro"))]
        if kind is Kind.VIEW and len(parents) == 1:
            return [Mount(type="bind", source=parents[0], options=("rbind", "ro"))]
        if kind is Kind.VIEW:
            options = (f"lowerdir={':'.join(parents)}",) + self._feature_options
        else:
            options = (
                f"workdir={self._dir(record.id)}/work",
                f"upperdir={own}",
                f"lowerdir={':'.join(parents)}",
            ) + self._feature_options
        return [Mount(type="overlay", source="overlay", options=options)]

    def _check_mount_data(self, key: str, parent_ids: tuple[int, ...], kind: Kind) -> None:
        # The record does not exist yet: measure with the largest ID it may get.
        probe = Record(
            id=10**12,
            info=SnapshotInfo(name=key, parent="", kind=kind),
            parent_ids=parent_ids,
        )
        for mount in self._mounts(probe):
            size = len(",".join(mount.options))
            if size > MOUNT_DATA_LIMIT:
                raise FailedPrecondition(
                    f"Snapshot chain for {key} is too deep: {len(parent_ids)} layers need "
                    f"{size} bytes of overlay mount options, the kernel takes {MOUNT_DATA_LIMIT}"
                )

    # ---------------------------------------------------------------- create

    def prepare(self, key: str, parent: str = "", labels: Mapping[str, str] | None = None) -> Deferred[list[Mount]]:
        """
        Create active snapshot C{key} on committed C{parent}; fires with its
        mounts. AlreadyExists, NotFound (parent), FailedPrecondition (parent
        not committed, chain too deep), InvalidArgument (bad key).
        """
        return self._create(Kind.ACTIVE, key, parent, labels)

    def view(self, key: str, parent: str = "", labels: Mapping[str, str] | None = None) -> Deferred[list[Mount]]:
        """
        Create read-only view C{key} of committed C{parent}; fires with its mounts.
        """
        return self._create(Kind.VIEW, key, parent, labels)

    def _create(self, kind: Kind, key: str, parent: str, labels: Mapping[str, str] | None) -> Deferred[list[Mount]]:
        try:
            validate_key(key)
        except InvalidArgument as e:
            return _failed(e)
        d = self.run(self._create_sync, kind, key, parent, dict(labels or {}))

        def created(mounts: list[Mount]) -> list[Mount]:
            self._publish("view" if kind is Kind.VIEW else "prepare", key, parent=parent)
            return mounts

        return d.addCallback(created)

    def _create_sync(self, kind: Kind, key: str, parent: str, labels: dict[str, str]) -> list[Mount]:
        with self._meta.read() as tx:
            if tx.exists(key):
                raise AlreadyExists(f"Snapshot {key} already exists")
            parent_ids: tuple[int, ...] = ()
            if parent:
                if not tx.exists(parent):
                    raise NotFound(f"No such parent snapshot: {parent}")
                parent_record = tx.get(parent)
                parent_ids = (parent_record.id,) + parent_record.parent_ids
        self._check_mount_data(key, parent_ids, kind)
        temp = tempfile.mkdtemp(prefix="new-", dir=self.snapshots_dir)
        with self._in_flight_lock:
            self._in_flight.add(os.path.basename(temp))
        try:
            os.chmod(temp, 0o700)
            os.mkdir(f"{temp}/fs")
            # The container's root directory: 0755 whatever the daemon's umask.
            os.chmod(f"{temp}/fs", 0o755)
            if kind is Kind.ACTIVE:
                os.mkdir(f"{temp}/work", 0o700)
            if parent_ids:
                # The merged root belongs to whoever owns the parent's root.
                st = os.stat(self.fs_path(parent_ids[0]))
                os.chown(f"{temp}/fs", st.st_uid, st.st_gid)
            with self._meta.write() as tx:
                record = tx.create(key, parent, kind, labels)
                target = self._dir(record.id)
                if os.path.lexists(target):
                    # Left by a crash between rename and commit: no record
                    # can own an ID that is being allocated now.
                    remove_tree(target)
                os.rename(temp, target)
                try:
                    fsync_dir(str(self.snapshots_dir))
                except BaseException:
                    os.rename(target, temp)
                    raise
            return self._mounts(record)
        except BaseException:
            if os.path.lexists(temp):
                remove_tree(temp, ignore_errors=True)
            raise
        finally:
            with self._in_flight_lock:
                self._in_flight.discard(os.path.basename(temp))

    # ---------------------------------------------------------------- change

    def commit(self, name: str, key: str, labels: Mapping[str, str] | None = None) -> Deferred[None]:
        """
        Active snapshot C{key} becomes committed C{name} with C{labels}
        (the active's labels are not carried over). NotFound, AlreadyExists
        (name), FailedPrecondition (a view, committed, or held in use).
        """
        try:
            validate_key(name, "name")
            validate_key(key)
        except InvalidArgument as e:
            return _failed(e)

        def commit() -> None:
            with self._meta.write() as tx:
                tx.commit(name, key, dict(labels or {}))

        d = self.run(commit)
        d.addCallback(lambda _: self._publish("commit", name, key=key))
        return d

    def remove(self, key: str) -> Deferred[None]:
        """
        Remove C{key} and its directory. NotFound; FailedPrecondition when it
        has children or a container holds it (L{IN_USE_LABEL}).
        """
        def remove() -> None:
            with self._meta.write() as tx:
                record = tx.remove(key)
            self._discard(self._dir(record.id))

        d = self.run(remove)
        d.addCallback(lambda _: self._publish("remove", key))
        return d

    def _discard(self, path: str) -> None:
        aside = f"{self.snapshots_dir}/rm-{os.path.basename(path)}"
        if os.path.lexists(aside):
            remove_tree(aside, ignore_errors=True)
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return
        remove_tree(aside, ignore_errors=True)

    def update(self, key: str, labels: Mapping[str, str | None]) -> Deferred[SnapshotInfo]:
        """
        Set labels (a value) or delete them (None) on C{key}; fires with the
        new info. NotFound.
        """
        def update() -> SnapshotInfo:
            with self._meta.write() as tx:
                return tx.update_labels(key, labels).info

        return self.run(update)

    def hold(self, key: str, holder: str) -> Deferred[SnapshotInfo]:
        """
        Mark C{key} as used by C{holder} (a container ID): until
        L{release}, removing or committing it fails with FailedPrecondition.
        FailedPrecondition when someone else holds it already.
        """
        def hold() -> SnapshotInfo:
            with self._meta.write() as tx:
                return tx.hold(key, holder).info

        return self.run(hold)

    def release(self, key: str, holder: str) -> Deferred[SnapshotInfo]:
        """
        Undo L{hold} by C{holder}; a no-op when C{holder} does not hold it.
        """
        def release() -> SnapshotInfo:
            with self._meta.write() as tx:
                return tx.release(key, holder).info

        return self.run(release)

    # ---------------------------------------------------------------- read

    def stat(self, key: str) -> Deferred[SnapshotInfo]:
        """
        The info of C{key}; NotFound.
        """
        def stat() -> SnapshotInfo:
            with self._meta.read() as tx:
                return tx.get(key).info

        return self.run(stat)

    def list(self, filters: Iterable[str] = ()) -> Deferred[list[SnapshotInfo]]:
        """
        Every snapshot matching all C{filters} (see
        L{ross.engine.snapshots.filters}), ordered by name. InvalidArgument
        for a malformed filter.
        """
        try:
            matches = parse_filters(filters)
        except InvalidArgument as e:
            return _failed(e)

        def list_() -> list[SnapshotInfo]:
            with self._meta.read() as tx:
                return [r.info for r in tx.all() if matches(r.info)]

        return self.run(list_)

    def mounts(self, key: str) -> Deferred[builtins.list[Mount]]:
        """
        Mounts of active snapshot or view C{key}. NotFound;
        FailedPrecondition for a committed snapshot.
        """
        def mounts() -> builtins.list[Mount]:
            with self._meta.read() as tx:
                return self._mounts(tx.get(key))

        return self.run(mounts)

    def usage(self, key: str) -> Deferred[Usage]:
        """
        Bytes and inodes of C{key}'s own directory.
        """
        def usage() -> Usage:
            with self._meta.read() as tx:
                record = tx.get(key)
            return disk_usage(self.fs_path(record.id))

        return self.run(usage)

    # ---------------------------------------------------------------- layers

    def _active(self, key: str, verb: str, kinds: tuple[Kind, ...] = (Kind.ACTIVE,)) -> Record:
        with self._meta.read() as tx:
            record = tx.get(key)
        if record.info.kind not in kinds:
            raise FailedPrecondition(
                f"Cannot {verb} snapshot {key}: it is {record.info.kind.value}"
            )
        return record

    def apply_layer(self, key: str, blob: str | Path | Readable, digest: bool = True) -> Deferred[LayerResult]:
        """
        Extract the layer C{blob} (gzip, zstd or plain tar), a file or a
        stream, into active snapshot C{key}. When the snapshot was empty, a
        failure leaves it empty again. Fires with the diff ID (empty
        without C{digest}) and uncompressed size; InvalidArgument for a
        corrupt or unsupported layer. A stream is read by a thread of its
        own, not the pool's: it may wait on its writer, which may be a pool
        thread (a diff).
        """
        def apply() -> LayerResult:
            record = self._active(key, "extract a layer into")
            fs = self.fs_path(record.id)
            lowers = [self.fs_path(i) for i in record.parent_ids]
            was_empty = not os.listdir(fs)
            try:
                if not isinstance(blob, (str, Path)):
                    return apply_layer(blob, fs, lowers, digest)
                with open(blob, "rb") as source:
                    return apply_layer(source, fs, lowers, digest)
            except BaseException:
                if was_empty:
                    _empty_dir(fs)
                raise

        if isinstance(blob, (str, Path)):
            return self.run(apply)
        return in_thread(self._reactor, apply, name="ross-extract")

    def diff(self, key: str, sink: LayerSink, compression: str = "gzip",
             exclude: Collection[str] = (), tap: LayerSink | None = None) -> Deferred[DiffResult]:
        """
        Write the changes of C{key} against its parent as a layer tar
        (C{compression} "gzip" or "none") to C{sink}, an object with
        C{write(bytes)} called from one worker thread; without the paths
        of C{exclude} (relative: "etc/hosts"); the uncompressed tar to
        C{tap} too (see L{write_diff}).
        """
        def diff() -> DiffResult:
            record = self._active(key, "diff", (Kind.ACTIVE, Kind.COMMITTED))
            return write_diff(self.fs_path(record.id), sink, compression, exclude, tap)

        return self.run(diff)

    # ---------------------------------------------------------------- cleanup

    def cleanup(self) -> Deferred[int]:
        """
        Remove directories no snapshot record owns (left by crashes or
        interrupted removals); fires with how many were removed.
        """
        return self.run(self._cleanup_sync).addCallback(self._cleaned)

    def _cleanup_sync(self) -> int:
        # Hold the write lock while choosing: a prepare between its rename
        # and its commit owns a directory the database does not show yet.
        doomed = []
        with self._meta.write() as tx:
            ids = {str(i) for i in tx.ids()}
            with self._in_flight_lock:
                busy = set(self._in_flight)
            for entry in os.listdir(self.snapshots_dir):
                if entry in ids or entry in busy:
                    continue
                path = f"{self.snapshots_dir}/{entry}"
                if entry.isdigit():
                    aside = f"{self.snapshots_dir}/rm-{entry}"
                    if os.path.lexists(aside):
                        remove_tree(aside, ignore_errors=True)
                    os.rename(path, aside)
                    path = aside
                doomed.append(path)
        for path in doomed:
            if os.path.isdir(path) and not os.path.islink(path):
                remove_tree(path, ignore_errors=True)
            else:
                os.unlink(path)
        return len(doomed)

    def _cleaned(self, count: int) -> int:
        if count:
            self._log.info("snapshot cleanup removed {count} orphaned directories", count=count)
        return count


def _empty_dir(path: str) -> None:
    try:
        os.removexattr(path, "trusted.overlay.opaque")
    except OSError:
        pass
    for entry in os.scandir(path):
        if entry.is_dir(follow_symlinks=False):
            remove_tree(entry.path)
        else:
            os.unlink(entry.path)


def _failed(error: BaseException) -> Deferred[Any]:
    return fail(error)
