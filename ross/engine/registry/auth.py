# -*- test-case-name: ross.test.test_registry_units -*-
"""
Registry authentication: credentials, C{WWW-Authenticate} challenges and
the bearer tokens a token server hands out (the Docker Hub scheme of the
distribution spec: a 401 names a realm, service and scope; the client asks
the realm for a token with its credentials and retries with it).

Credentials are never logged: L{Credentials} hides them from C{repr}.
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Mapping

import attrs


@attrs.frozen(repr=False)
class Credentials:
    """
    What a user gave for one registry: a username and password, or an
    identity token (an OAuth refresh token, sent to the token server).
    """

    username: str = ""
    password: str = ""
    identity_token: str = ""

    @property
    def empty(self) -> bool:
        return not (self.username or self.password or self.identity_token)

    def fingerprint(self) -> str:
        """
        A digest of the whole credentials: tokens are cached under it, so
        only the same username with the same password reuses one.
        """
        raw = "\0".join((self.username, self.password, self.identity_token)).encode()
        return hashlib.sha256(raw).hexdigest()

    def basic(self) -> str:
        """The C{Authorization} value of HTTP basic auth."""
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password=<hidden>)"


ANONYMOUS = Credentials()


@attrs.frozen
class Challenge:
    """
    One challenge of a C{WWW-Authenticate} header: C{scheme} in lower case
    ("basic", "bearer") and its parameters (C{realm}, C{service}, C{scope}).
    """

    scheme: str
    params: Mapping[str, str] = attrs.field(factory=dict)


_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_PARAM = re.compile(r"\s*(" + _TOKEN + r")\s*=\s*(?:\"((?:[^\"\\]|\\.)*)\"|(" + _TOKEN + r"))\s*(?:,|$)")
_SCHEME = re.compile(r"\s*(" + _TOKEN + r")(?:\s+|$)")


def parse_challenges(values: list[str]) -> list[Challenge]:
    """
    The challenges of C{WWW-Authenticate} header values (one challenge per
    value, as registries send them). Values that do not parse are skipped.
    """
    out = []
    for value in values:
        match = _SCHEME.match(value)
        if match is None:
            continue
        scheme = match.group(1).lower()
        rest = value[match.end():]
        params: dict[str, str] = {}
        pos = 0
        while pos < len(rest):
            param = _PARAM.match(rest, pos)
            if param is None:
                break
            quoted = param.group(2)
            params[param.group(1).lower()] = (
                re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else param.group(3))
            pos = param.end()
        out.append(Challenge(scheme, params))
    return out


@attrs.frozen
class Token:
    value: str
    expires: float


class TokenCache:
    """
    Bearer tokens by (realm, service, scopes, who asked), until they expire.
    """

    def __init__(self) -> None:
        self._tokens: dict[tuple[str, str, str, str, str], Token] = {}

    def get(self, key: tuple[str, str, str, str, str], now: float) -> str | None:
        token = self._tokens.get(key)
        if token is None:
            return None
        if token.expires <= now:
            del self._tokens[key]
            return None
        return token.value

    def put(self, key: tuple[str, str, str, str, str], token: Token) -> None:
        self._tokens[key] = token

    def forget(self, realm_host: str) -> None:
        """Drop every token the registry C{realm_host} was given (logout)."""
        for key in [k for k in self._tokens if k[4] == realm_host]:
            del self._tokens[key]
