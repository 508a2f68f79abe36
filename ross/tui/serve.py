# -*- test-case-name: ross.test.integration.test_tui_browser -*-
"""
``ross-tui --serve [ADDR]``: the console in a web browser, with
textual-serve (each browser tab runs its own ``ross-tui`` process, driven
over a websocket).

The console can do anything the daemon allows, so the page is guarded as
the daemon's socket is:

  - it listens on 127.0.0.1:8000 unless told otherwise, and a non-loopback
    address is refused without TLS (``--serve-cert``/``--serve-key``), as
    the daemon refuses a non-loopback TCP listener;
  - every request needs the token: printed with the URL at start (a new
    random one each time), or read from ``--serve-token-file``. The URL
    with ``?token=`` sets an HttpOnly, SameSite=Strict cookie and redirects
    to the plain URL; the websocket must carry the cookie and come from the
    page's own origin.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import shlex
import socket
import ssl
import sys
from typing import TYPE_CHECKING, Any, Awaitable, Callable

import attrs

if TYPE_CHECKING:
    from aiohttp import web
    from aiohttp.typedefs import Middleware

DEFAULT_ADDRESS = "127.0.0.1:8000"
COOKIE = "ross_tui_token"


class ServeError(Exception):
    pass


@attrs.frozen
class ServeOptions:
    host: str
    port: int
    cert: str | None = None
    key: str | None = None
    token: str = ""

    @property
    def tls(self) -> bool:
        return self.cert is not None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_address(text: str) -> tuple[str, int]:
    """
    "HOST:PORT", ":PORT", "PORT" or "HOST" (port 8000); IPv6 in brackets.
    """
    text = text or DEFAULT_ADDRESS
    if text.isdigit():
        return "127.0.0.1", int(text)
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.lstrip(":")
    else:
        host, _, port = text.rpartition(":") if ":" in text else (text, "", "")
    if port and not port.isdigit():
        raise ServeError(f"invalid address {text!r}: HOST:PORT")
    return host or "127.0.0.1", int(port or 8000)


def options(address: str, cert: str | None, key: str | None, token_file: str | None) -> ServeOptions:
    """
    The serving options, checked: a certificate goes with its key, and an
    address that is not loopback needs TLS.
    """
    host, port = parse_address(address)
    if bool(cert) != bool(key):
        raise ServeError("--serve-cert and --serve-key go together")
    if not is_loopback(host) and not cert:
        raise ServeError(f"refusing to serve the console on {host} without TLS: "
                         "use --serve-cert and --serve-key, or a loopback address")
    if token_file:
        try:
            with open(token_file) as f:
                token = f.read().strip()
        except OSError as e:
            raise ServeError(f"cannot read --serve-token-file {token_file}: {e.strerror}") from None
        if not token:
            raise ServeError(f"--serve-token-file {token_file} is empty")
    else:
        token = secrets.token_urlsafe(24)
    return ServeOptions(host, port, cert, key, token)


def split_options(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """
    Take --serve-cert, --serve-key and --serve-token-file (with their
    values) out of C{argv}.
    """
    found: dict[str, str] = {}
    rest: list[str] = []
    names = ("--serve-cert", "--serve-key", "--serve-token-file")
    i = 0
    while i < len(argv):
        name, eq, value = argv[i].partition("=")
        if name in names:
            if not eq:
                i += 1
                if i >= len(argv):
                    raise ServeError(f"flag needs an argument: {name}")
                value = argv[i]
            found[name] = value
        else:
            rest.append(argv[i])
        i += 1
    return found, rest


def guard(opts: ServeOptions) -> Middleware:
    """
    The aiohttp middleware that lets in only requests with the token.
    """
    from aiohttp import web

    def good(value: str | None) -> bool:
        return value is not None and hmac.compare_digest(value.encode(), opts.token.encode())

    @web.middleware
    async def check(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                    ) -> web.StreamResponse:
        if request.path.startswith("/static/"):
            # textual-serve's own scripts and fonts: nothing of the daemon's.
            return await handler(request)
        if good(request.query.get("token")) and request.path == "/":
            response = web.HTTPFound("/")
            response.set_cookie(COOKIE, opts.token, httponly=True, samesite="Strict", secure=opts.tls)
            raise response
        if not good(request.cookies.get(COOKIE)):
            raise web.HTTPForbidden(text="ross-tui: open the URL with its token (printed when the server started)\n")
        if request.path == "/ws":
            origin = request.headers.get("Origin")
            if origin is not None and origin.rstrip("/") != opts.url:
                raise web.HTTPForbidden(text="ross-tui: websocket from another origin\n")
        return await handler(request)

    return check


def make_server(opts: ServeOptions, console_argv: list[str]) -> Any:
    """
    textual-serve's Server running ``ross-tui CONSOLE_ARGV`` for each
    browser tab, behind the token guard.
    """
    from aiohttp import web
    from textual_serve.server import Server

    command = shlex.join([sys.executable, "-m", "ross.tui.app", *console_argv])

    class GuardedServer(Server):
        async def _make_app(self) -> web.Application:
            app = await super()._make_app()
            app.middlewares.append(guard(opts))
            return app

        async def on_startup(self, app: web.Application) -> None:
            self.console.print(f"Serving the Ross console on {opts.url}/?token={opts.token}", highlight=False)

    return GuardedServer(command, host=opts.host, port=opts.port, title="Ross", public_url=opts.url)


def run_server(server: Any, opts: ServeOptions) -> None:
    from aiohttp import web

    context = None
    if opts.tls:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(opts.cert or "", opts.key)
    server.initialize_logging()
    web.run_app(server._make_app(), host=opts.host, port=opts.port, ssl_context=context, print=lambda *a: None,
                family=socket.AF_INET6 if ":" in opts.host else socket.AF_INET)


def serve_console(address: str, flags: dict[str, str], console_argv: list[str]) -> int:
    """
    Serve the console with C{console_argv} (its -H, TLS... flags) on
    C{address}, until interrupted.
    """
    try:
        opts = options(address, flags.get("--serve-cert"), flags.get("--serve-key"),
                       flags.get("--serve-token-file"))
    except ServeError as e:
        sys.stderr.write(f"ross-tui: {e}\n")
        return 125
    run_server(make_server(opts, console_argv), opts)
    return 0
