# -*- test-case-name: ross.test.integration.test_registry -*-
"""
The engine's registry subsystem: pull, push, login and logout as the
ImageService RPCs ask for them.

References are docker's ("busybox" is docker.io/library/busybox:latest);
credentials come with each request (the CLI reads them from its
config.json, as docker sends X-Registry-Auth) and are never stored or
logged by the daemon.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, List, Mapping

import attrs
from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger

from ross.engine.pipes import Guard
from ross.engine.reactors import IEngineReactor
from ross.reference import (
    Reference,
    parse_normalized,
    registry_domain,
    valid_tag,
)
from ross.engine.events import EventBus
from ross.engine.images.store import ImageStore
from ross.engine.records import Platform
from ross.engine.registry.auth import ANONYMOUS, Credentials
from ross.engine.registry.progress import Progress, Report
from ross.errors import InvalidArgument, NotFound

if TYPE_CHECKING:
    # The HTTP client (treq, twisted.web's client, http.cookiejar) is
    # imported at the first pull, push or login: an idle daemon has no use
    # for its memory.
    from ross.engine.registry.client import Client, Hosts, Session
    from ross.engine.registry.pull import Puller
    from ross.engine.registry.push import Pusher

DEFAULT_CERTS_DIR = Path("/etc/ross/certs.d")

#: Tags listed per request of a paginated tag list.
TAGS_PAGE = 1000


@attrs.frozen
class PushResult:
    digest: str
    size: int


class Registry:
    """
    Pulls into and pushes from C{images}.

    @param events: the engine's event bus (pushes are published there).
    @param insecure: registries (HOST:PORT) reached over plain http.
    @param certs_dir: where C{HOST:PORT/ca.crt} files are looked for.
    @param mirrors: registry -> the registry (HOST:PORT) pulls from it go to
        instead, the repository path kept (containerd's hosts.toml mirror);
        the images keep the names asked for. Pushes go where they name.
    """

    _log = Logger()

    def __init__(self, reactor: IEngineReactor, images: ImageStore, events: EventBus, insecure: Iterable[str] = (),
                 certs_dir: Path = DEFAULT_CERTS_DIR, mirrors: Mapping[str, str] | None = None) -> None:
        self.reactor = reactor
        self.images = images
        self._events = events
        self.mirrors = dict(mirrors or {})
        self._insecure = insecure
        self._certs_dir = certs_dir

    @cached_property
    def hosts(self) -> Hosts:
        from ross.engine.registry.client import Hosts

        return Hosts(self.reactor, self._insecure, self._certs_dir)

    @cached_property
    def client(self) -> Client:
        from ross.engine.registry.client import Client

        return Client(self.reactor, self.hosts)

    @cached_property
    def puller(self) -> Puller:
        from ross.engine.registry.pull import Puller

        return Puller(self.reactor, self.images.content, self.images.catalog, self.images.unpacker,
                      self.images.platform)

    @cached_property
    def pusher(self) -> Pusher:
        from ross.engine.registry.push import Pusher

        return Pusher(self.reactor, self.images.content, self.images.catalog)

    def stop(self) -> Deferred[None]:
        if "client" not in self.__dict__:
            return succeed(None)
        return self.client.close()

    def _guarded(self) -> tuple[Guard, List[Session]]:
        sessions: List[Session] = []

        def cancel() -> None:
            for session in sessions:
                session.abort()

        return Guard(cancel), sessions

    # -- pull

    def pull(self, name: str, tag: str = "", credentials: Credentials = ANONYMOUS,
             platform: Platform | None = None, all_tags: bool = False,
             report: Report = lambda p: None) -> Deferred[List[str]]:
        """
        Pull C{name} (with C{tag} when given; every tag with C{all_tags})
        for C{platform} (this host's by default), reporting progress;
        fires with the digests pulled. Cancelling stops the downloads and
        undoes the pull in progress.
        """
        try:
            ref = self._pull_reference(name, tag, all_tags)
        except InvalidArgument as e:
            return fail(e)
        wanted = platform or self.images.platform
        if not wanted.os:
            wanted = attrs.evolve(wanted, os="linux")
        guard, sessions = self._guarded()

        async def pull() -> List[str]:
            session = self.client.session(self.mirrors.get(ref.domain, ref.domain), ref.path, credentials)
            sessions.append(session)
            if not all_tags:
                digest = await self.puller.pull(session, ref, wanted, report)
                self._log.info("pulled {name} ({digest})", name=str(ref), digest=digest)
                return [digest]
            tags = await self.list_tags(session)
            if not tags:
                raise NotFound(f"repository {ref.familiar()} has no tags")
            digests = []
            for t in tags:
                guard.check()
                digests.append(await self.puller.pull(session, ref._replace(tag=t), wanted, report))
                self._log.info("pulled {name} ({digest})", name=str(ref._replace(tag=t)), digest=digests[-1])
            return digests

        return guard.run(pull())

    def _pull_reference(self, name: str, tag: str, all_tags: bool) -> Reference:
        if not name:
            raise InvalidArgument("image name must not be empty")
        ref = parse_normalized(name)
        if tag:
            if not valid_tag(tag):
                raise InvalidArgument(f"invalid tag format: {tag!r}")
            if ref.digest:
                raise InvalidArgument(f"cannot pull {name} with a tag and a digest")
            ref = ref._replace(tag=tag)
        if all_tags:
            if ref.tag or ref.digest:
                raise InvalidArgument("tag can't be used with --all-tags/-a")
            return ref
        return ref.with_default_tag()

    async def list_tags(self, session: Session) -> List[str]:
        """Every tag of the session's repository, following pagination."""
        from ross.engine.registry.client import read_body

        tags: List[str] = []
        url = session.repo_url(f"tags/list?n={TAGS_PAGE}")
        while url:
            response = await session.request("GET", url,
                                             not_found=f"repository {session.domain}/{session.repository} not found")
            body = await read_body(response, what="tag list")
            try:
                doc = json.loads(body)
                page = doc.get("tags") or []
            except (ValueError, AttributeError):
                raise InvalidArgument(f"{session.domain}: the tag list is not JSON") from None
            tags += [t for t in page if isinstance(t, str) and valid_tag(t)]
            url = _next_link(session, response.headers.getRawHeaders("link", []))
        return sorted(set(tags))

    # -- push

    def push(self, name: str, tag: str = "", credentials: Credentials = ANONYMOUS,
             report: Report = lambda p: None) -> Deferred[List[PushResult]]:
        """
        Push the local image C{name} (C{tag} when given; every local tag
        of the repository when neither gives one), reporting progress.
        """
        guard, sessions = self._guarded()

        async def push() -> List[PushResult]:
            refs = await self._push_references(name, tag)
            report(Progress(f"The push refers to repository [{refs[0].name}]"))
            results = []
            for ref in refs:
                guard.check()
                image = await self.images.resolve(str(ref))
                sources = await self.pusher.sources(ref, image)
                scopes = [f"repository:{ref.path}:pull,push"]
                scopes += [f"repository:{s}:pull" for s in sorted({s for v in sources.values() for s in v})]
                session = self.client.session(ref.domain, ref.path, credentials, scopes)
                sessions.append(session)
                digest, size = await self.pusher.push(session, ref, image, sources, report)
                self._events.publish("image", "push", image.id, name=str(ref))
                self._log.info("pushed {name} ({digest})", name=str(ref), digest=digest)
                results.append(PushResult(digest, size))
            return results

        return guard.run(push())

    async def _push_references(self, name: str, tag: str) -> List[Reference]:
        if not name:
            raise InvalidArgument("image name must not be empty")
        ref = parse_normalized(name)
        if ref.digest:
            raise InvalidArgument(f"cannot push a digest reference ({name}): push a tag")
        if tag:
            if not valid_tag(tag):
                raise InvalidArgument(f"invalid tag format: {tag!r}")
            ref = ref._replace(tag=tag)
        if ref.tag:
            return [ref]
        summaries = await self.images.list()
        refs = []
        for summary in summaries:
            for n in summary.row.names:
                other = parse_normalized(n)
                if other.name == ref.name and other.tag and not other.digest:
                    refs.append(other)
        if not refs:
            raise NotFound(f"An image does not exist locally with the tag: {ref.familiar_name}")
        return sorted(refs, key=str)

    # -- login

    def login(self, server: str, credentials: Credentials) -> Deferred[str]:
        """
        Check C{credentials} against the registry at C{server}; fires with
        docker's status line. UNAUTHENTICATED when the registry refuses.
        """
        from ross.engine.registry.client import Session, read_body

        async def login() -> str:
            domain = registry_domain(server)
            self.client.forget(domain)
            session = Session(self.client, domain, "", credentials, ())
            response = await session.request("GET", session.url("/v2/"), not_found=f"registry {domain}")
            await read_body(response)
            return "Login Succeeded"

        return Deferred.fromCoroutine(login())

    def logout(self, server: str) -> None:
        """Forget the tokens the daemon holds for C{server}."""
        self.client.forget(registry_domain(server))


def _next_link(session: Session, links: List[str]) -> str:
    for value in links:
        for part in value.split(","):
            target, _, params = part.partition(";")
            if 'rel="next"' in params.replace(" ", ""):
                return session.url(target.strip().strip("<>"))
    return ""
