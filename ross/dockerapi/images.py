# -*- test-case-name: ross.test.integration.test_dockerapi_images -*-
"""
docker's image routes over the image store and the registry client: list,
inspect, history, tag, remove, prune, pull (C{/images/create}) and push
with docker's JSON progress, import, save and load, commit, and a search
that finds nothing (Ross searches no index).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from ross.dockerapi.router import Call, Reply, Route, route
from ross.dockerapi.schema import create_request, familiar_name, image_inspect, image_summary
from ross.dockerapi.streams import send_flow
from ross.engine.engine import Engine
from ross.engine.records import Platform
from ross.engine.registry.auth import ANONYMOUS, Credentials
from ross.engine.registry.progress import Progress
from ross.errors import InvalidArgument, RossError
from ross.humanize import parse_rfc3339_ns


def credentials_of(call: Call) -> Credentials:
    """
    The credentials of C{X-Registry-Auth}: base64url JSON with username and
    password (or docker's "auth", base64 of both), or an identity token.
    """
    header = call.header("X-Registry-Auth").strip()
    if not header:
        return ANONYMOUS
    try:
        padded = header + "=" * (-len(header) % 4)
        auth = json.loads(base64.urlsafe_b64decode(padded))
    except (ValueError, binascii.Error, RecursionError):
        raise InvalidArgument("invalid X-Registry-Auth header: not base64 JSON")
    if not isinstance(auth, dict):
        raise InvalidArgument("invalid X-Registry-Auth header: expected an object")
    username, password = str(auth.get("username") or ""), str(auth.get("password") or "")
    if not username and auth.get("auth"):
        try:
            username, _, password = base64.b64decode(str(auth["auth"])).decode().partition(":")
        except (ValueError, binascii.Error):
            raise InvalidArgument("invalid X-Registry-Auth header: bad auth field")
    return Credentials(username, password, str(auth.get("identitytoken") or ""))


def progress_json(p: Progress) -> dict[str, Any]:
    """
    A progress line as docker's JSON message.
    """
    found: dict[str, Any] = {"status": p.status}
    if p.id:
        found["id"] = p.id
    if p.total or p.current:
        found["progressDetail"] = {"current": p.current, "total": p.total}
        found["progress"] = p.text
    elif p.id:
        found["progressDetail"] = {}
    return found


def error_json(message: str) -> dict[str, Any]:
    return {"errorDetail": {"message": message}, "error": message}


def _platform(text: str) -> Platform | None:
    if not text:
        return None
    parts = text.split("/")
    if len(parts) not in (2, 3) or not all(parts[:2]):
        raise InvalidArgument(f"invalid platform {text[:64]!r}: use os/arch[/variant]")
    return Platform(os=parts[0], architecture=parts[1], variant=parts[2] if len(parts) == 3 else "")


def _removal_lines(lines: list[str]) -> list[dict[str, str]]:
    """
    The store's "Untagged: X" and "Deleted: Y" lines (any case) as docker's
    objects.
    """
    found = []
    for line in lines:
        kind, _, what = line.partition(": ")
        if kind.lower() == "untagged":
            found.append({"Untagged": what})
        elif kind.lower() == "deleted":
            found.append({"Deleted": what})
    return found


class ImageRoutes:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._images = engine.images

    def routes(self) -> list[Route]:
        return [
            route("GET", "/images/json", self.listing),
            route("POST", "/images/create", self.create),
            route("POST", "/images/load", self.load),
            route("GET", "/images/get", self.save),
            route("GET", "/images/search", self.search),
            route("POST", "/images/prune", self.prune),
            route("POST", "/commit", self.commit),
            route("GET", "/images/{name:.*}/json", self.inspect),
            route("GET", "/images/{name:.*}/history", self.history),
            route("GET", "/images/{name:.*}/get", self.save_one),
            route("POST", "/images/{name:.*}/tag", self.tag),
            route("POST", "/images/{name:.*}/push", self.push),
            route("DELETE", "/images/{name:.*}", self.remove),
        ]

    async def listing(self, call: Call) -> Any:
        filters = [(key, value) for key, values in call.filters().items() for value in values]
        if call.query("filter"):
            # API < 1.41: a reference pattern of its own.
            filters.append(("reference", call.query("filter")))
        summaries = await self._images.list(call.flag("all"), filters)
        return [image_summary(s, s.shown) for s in summaries]

    async def inspect(self, call: Call) -> Any:
        image = await self._images.resolve(call["name"])
        return image_inspect(image)

    async def history(self, call: Call) -> Any:
        items = await self._images.history(call["name"])
        return [{"Id": h.id or "<missing>", "Created": parse_rfc3339_ns(h.created) // 1_000_000_000,
                 "CreatedBy": h.created_by, "Tags": [familiar_name(t) for t in h.tags] or None, "Size": h.size,
                 "Comment": h.comment} for h in items]

    async def tag(self, call: Call) -> Reply:
        repo, tag = call.query("repo"), call.query("tag")
        if not repo:
            raise InvalidArgument("repository name must have at least one component")
        await self._images.tag(call["name"], f"{repo}:{tag}" if tag else repo)
        return Reply(201)

    async def remove(self, call: Call) -> Any:
        result = await self._images.remove(call["name"], force=call.flag("force"), prune=not call.flag("noprune"))
        return _removal_lines([*result.untagged, *result.deleted])

    async def prune(self, call: Call) -> Any:
        filters = [(key, value) for key, values in call.filters().items() for value in values]
        lines, reclaimed = await self._images.prune(False, filters)
        return {"ImagesDeleted": _removal_lines(lines) or None, "SpaceReclaimed": reclaimed}

    async def search(self, call: Call) -> Any:
        return []

    async def create(self, call: Call) -> None:
        """
        Pull (C{fromImage}) or import (C{fromSrc}); the progress streams as
        JSON lines, an error as the last of them.
        """
        if call.query("fromSrc"):
            await self._import(call)
            return
        name, tag = call.query("fromImage"), call.query("tag")
        if not name:
            raise InvalidArgument("fromImage or fromSrc is required")
        platform = _platform(call.query("platform"))
        credentials = credentials_of(call)
        if "@" not in name and ":" in name.rpartition("/")[2] and not tag:
            name, _, tag = name.rpartition(":")
        call.start()
        try:
            await self._engine.registry.pull(name, tag, credentials, platform, False,
                                             lambda p: call.write_json(progress_json(p)))
        except RossError as e:
            call.write_json(error_json(e.message))

    async def _import(self, call: Call) -> None:
        if call.query("fromSrc") != "-":
            raise InvalidArgument("importing from a URL is not supported: send the archive as the body")
        content = call.request.content
        if content is None:
            raise InvalidArgument("the archive is missing")
        content.seek(0)
        repo, tag = call.query("repo"), call.query("tag")
        reference = f"{repo}:{tag}" if repo and tag else repo
        image_id = await self._images.import_image(content, reference, call.queries("changes"),
                                                   call.query("message"))
        call.start()
        call.write_json({"status": image_id})

    async def push(self, call: Call) -> None:
        credentials = credentials_of(call)
        call.start()
        try:
            results = await self._engine.registry.push(call["name"], call.query("tag"), credentials,
                                                       lambda p: call.write_json(progress_json(p)))
        except RossError as e:
            call.write_json(error_json(e.message))
            return
        last = results[-1]
        call.write_json({"progress": "", "aux": {"Tag": call.query("tag") or "latest", "Digest": last.digest,
                                                 "Size": last.size}})

    async def load(self, call: Call) -> None:
        """
        Load an archive; as dockerd, the answer is a JSON stream, a bad
        archive's error its last message.
        """
        content = call.request.content
        if content is None:
            raise InvalidArgument("the archive is missing")
        content.seek(0)
        call.start()
        try:
            result = await self._images.load(content)
        except RossError as e:
            call.write_json(error_json(e.message))
            return
        # The store's lines are docker's ("Loaded image: busybox:latest").
        for line in result.loaded:
            call.write_json({"stream": line + "\n"})

    async def save(self, call: Call) -> None:
        await self._save(call, call.queries("names"))

    async def save_one(self, call: Call) -> None:
        await self._save(call, [call["name"]])

    async def _save(self, call: Call, names: list[str]) -> None:
        _, flow = await self._images.save(names, "docker-archive")
        await send_flow(call, flow, "application/x-tar")

    async def commit(self, call: Call) -> Reply:
        repo, tag = call.query("repo"), call.query("tag")
        reference = f"{repo}:{tag}" if repo and tag else repo
        changes = [line for text in call.queries("changes") for line in text.splitlines() if line.strip()]
        body = call.json()
        if body:
            # The config the client wants the image to have: its parts
            # Ross takes as --change instructions.
            config = create_request({"Image": "-", **body}).config
            if config.cmd is not None:
                changes.append("CMD " + json.dumps(list(config.cmd)))
            if config.entrypoint is not None:
                changes.append("ENTRYPOINT " + json.dumps(list(config.entrypoint)))
            changes += [f"ENV {e}" for e in config.env if "=" in e]
            changes += [f"LABEL {json.dumps(k)}={json.dumps(v)}" for k, v in config.labels.items()]
        image_id = await self._engine.containers.commit(call.query("container"), reference, call.query("comment"),
                                                        call.query("author"), tuple(changes),
                                                        call.flag("pause", True))
        return Reply(201, {"Id": image_id})
