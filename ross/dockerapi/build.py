# -*- test-case-name: ross.test.integration.test_dockerapi_build -*-
"""
docker's classic builder API over the engine's builder: C{POST /build}
takes the context as a tar body and answers docker's JSON stream (the
step lines, the RUN steps' output, C{aux} with the image ID, errors as the
last message); C{POST /build/prune} forgets the cache.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import CancelledError
from twisted.internet.interfaces import IPushProducer
from twisted.python.failure import Failure

from ross.dockerapi.router import Call, Route, route, status_of
from ross.engine.build.manager import BuildManager
from ross.engine.engine import Engine
from ross.errors import InvalidArgument, RossError

if TYPE_CHECKING:
    # Imported at the first build (see ross.engine.build.manager).
    from ross.engine.build.builder import BuildRequest


def _json_map(call: Call, name: str) -> dict[str, Any]:
    text = call.query(name)
    if not text:
        return {}
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise InvalidArgument(f"invalid {name}: not JSON") from None
    if not isinstance(value, dict) or not all(isinstance(k, str) and k and "\0" not in k for k in value):
        raise InvalidArgument(f"invalid {name}: expected an object of names")
    for v in value.values():
        if v is not None and (not isinstance(v, str) or "\0" in v):
            raise InvalidArgument(f"invalid {name}: values must be strings")
    return value


def build_request(call: Call) -> BuildRequest:
    """
    A build's options from docker's query parameters.
    """
    from ross.engine.build.builder import BuildRequest

    if call.query("remote"):
        raise InvalidArgument("remote build contexts are not supported: the daemon builds offline")
    labels = _json_map(call, "labels")
    return BuildRequest(
        dockerfile_path=call.query("dockerfile") or "Dockerfile",
        tags=tuple(call.queries("t")),
        build_args=_json_map(call, "buildargs"),
        no_cache=call.flag("nocache"),
        pull=call.flag("pull"),
        target=call.query("target"),
        labels={k: v or "" for k, v in labels.items()},
        network=call.query("networkmode") or "default",
    )


class _Output:
    """
    A build's output as docker's JSON stream: what RUN steps write to
    stderr in red, as the classic builder shows it; the closing
    "Successfully ..." lines held back until the image ID has gone out
    (clients take the last line for the tag, the aux message for the ID).
    """

    def __init__(self, call: Call) -> None:
        self._call = call
        self._held: list[str] | None = None

    def line(self, text: str) -> None:
        if text.startswith("Successfully built "):
            self._held = []
        if self._held is not None:
            self._held.append(text)
        else:
            self._call.write_json({"stream": text + "\n"})

    def write(self, stream: str, data: bytes) -> None:
        text = data.decode(errors="replace")
        if stream == "stderr":
            text = f"\x1b[91m{text}\x1b[0m"
        self._call.write_json({"stream": text})

    def finish(self, image_id: str | None) -> None:
        """
        The image's ID (None when the build failed), then the lines held.
        """
        if image_id is not None:
            self._call.write_json({"aux": {"ID": image_id}})
        held, self._held = self._held or [], None
        for text in held:
            self._call.write_json({"stream": text + "\n"})

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        if self._call.request.channel is not None:
            self._call.request.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        # Once the client went away, the request has no connection left to
        # let go of the producer.
        if self._call.request.channel is not None:
            self._call.request.unregisterProducer()


class BuildRoutes:
    def __init__(self, engine: Engine) -> None:
        self._builds: BuildManager = engine.builds

    def routes(self) -> list[Route]:
        return [
            route("POST", "/build", self.build),
            route("POST", "/build/prune", self.prune),
        ]

    async def build(self, call: Call) -> None:
        from ross.engine.build.builder import StepFailed
        from ross.engine.build.context import ContextArchive

        request = build_request(call)
        builds = self._builds
        content = call.request.content
        call.start()
        scratch = await builds.scratch_dir()
        context = ContextArchive(str(Path(scratch) / "context.tar"))
        try:
            if content is not None:
                content.seek(0)
                await builds.run_blocking(context.receive, content)
            dockerfile = context.read_file(request.dockerfile_path)
            if dockerfile is None:
                raise InvalidArgument(f"Cannot locate specified Dockerfile: {request.dockerfile_path}")
            plan = builds.prepare(request, dockerfile)
            context.apply_ignore(request.dockerfile_path)
            context.drop_build_files(request.dockerfile_path)
            output = _Output(call)
            try:
                result = await builds.build(plan, context, output, scratch, None)
            except BaseException:
                output.finish(None)
                raise
            output.finish(result.image_id)
        except RossError as e:
            detail: dict[str, Any] = {"message": e.message}
            if isinstance(e, StepFailed):
                detail["code"] = e.exit_code
            call.write_json({"errorDetail": detail, "error": e.message})
        except CancelledError:
            # The client went away (docker build ... | head): the router
            # ends the call, no error of the daemon's.
            raise
        except Exception:
            # A bug (logged with its traceback there): the stream has begun,
            # so the client reads it here rather than in a 500.
            _, message = status_of(Failure())
            call.write_json({"errorDetail": {"message": message}, "error": message})
        finally:
            context.close()
            await builds.remove_scratch(scratch)

    async def prune(self, call: Call) -> Any:
        deleted, reclaimed = await self._builds.prune()
        return {"CachesDeleted": deleted or None, "SpaceReclaimed": reclaimed}
