# -*- test-case-name: ross.test.test_reference -*-
"""
Image references parsed exactly as docker parses them
(github.com/distribution/reference: C{ParseNormalizedNamed},
C{ParseAnyReference}, C{FamiliarString}).

C{busybox} is C{docker.io/library/busybox:latest}; C{host:port/repo:tag}
and C{repo@sha256:...} work; a 64-hex string is an image ID, never a name.
"""

# No attrs and no "from __future__ import annotations": the CLI imports
# this (images, run, pull), and attrs is about 10 ms of its start; a
# NamedTuple's string annotations would each cost a typing.ForwardRef.
import re
from typing import NamedTuple
from urllib.parse import urlsplit

from ross.errors import InvalidArgument

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_REPO_PREFIX = "library/"
DEFAULT_TAG = "latest"
NAME_TOTAL_LENGTH_MAX = 255

_alnum = r"[a-z0-9]+"
_separator = r"(?:[._]|__|[-]+)"
_path_component = _alnum + r"(?:" + _separator + _alnum + r")*"
_domain_name_component = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_ipv6 = r"\[(?:[a-fA-F0-9:]+)\]"
_domain_name = _domain_name_component + r"(?:\." + _domain_name_component + r")*"
_host = r"(?:" + _domain_name + r"|" + _ipv6 + r")"
_domain = _host + r"(?::[0-9]+)?"
_tag = r"[\w][\w.-]{0,127}"
_digest = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][0-9a-fA-F]{32,}"
_remote_name = _path_component + r"(?:/" + _path_component + r")*"
_name = r"(?:" + _domain + r"/)?" + _remote_name

REFERENCE_RE = re.compile(
    r"^(" + _name + r")(?::(" + _tag + r"))?(?:@(" + _digest + r"))?$"
)
_ANCHORED_DOMAIN = re.compile(r"^" + _domain + r"$")
_ANCHORED_NAME = re.compile(r"^(?:(" + _domain + r")/)?(" + _remote_name + r")$")
_ANCHORED_TAG = re.compile(r"^" + _tag + r"$")
_ANCHORED_DIGEST = re.compile(r"^" + _digest + r"$")
_IDENTIFIER = re.compile(r"^[a-f0-9]{64}$")
_SHORT_IDENTIFIER = re.compile(r"^[a-f0-9]{6,64}$")
_SHA256 = re.compile(r"^sha256:[a-f0-9]{64}$")


class ReferenceError(InvalidArgument):
    """An image reference that docker would refuse, with docker's message."""


class Reference(NamedTuple):
    """
    A normalised reference: C{domain}/C{path}, with a tag, a digest, both or
    neither.
    """

    domain: str
    path: str
    tag: str = ""
    digest: str = ""

    @property
    def name(self) -> str:
        """The full repository name, "docker.io/library/busybox"."""
        return f"{self.domain}/{self.path}"

    def __str__(self) -> str:
        s = self.name
        if self.tag:
            s += ":" + self.tag
        if self.digest:
            s += "@" + self.digest
        return s

    def with_default_tag(self) -> "Reference":
        """docker's TagNameOnly: a bare name gets ":latest"."""
        if self.tag or self.digest:
            return self
        return self._replace(tag=DEFAULT_TAG)

    @property
    def familiar_name(self) -> str:
        """"busybox" for docker.io/library/busybox, "foo/bar" for docker.io/foo/bar."""
        if self.domain == DEFAULT_DOMAIN:
            path = self.path
            if path.startswith(OFFICIAL_REPO_PREFIX) and "/" not in path[len(OFFICIAL_REPO_PREFIX):]:
                path = path[len(OFFICIAL_REPO_PREFIX):]
            return path
        return self.name

    def familiar(self) -> str:
        """docker's FamiliarString: "busybox:latest", "localhost:5000/x@sha256:..."."""
        s = self.familiar_name
        if self.tag:
            s += ":" + self.tag
        if self.digest:
            s += "@" + self.digest
        return s


def _split_docker_domain(name: str) -> tuple[str, str]:
    i = name.find("/")
    if i == -1 or (
        not any(c in name[:i] for c in ".:") and name[:i] != "localhost" and name[:i].lower() == name[:i]
    ):
        domain, remainder = DEFAULT_DOMAIN, name
    else:
        domain, remainder = name[:i], name[i + 1:]
    if domain == LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in remainder:
        remainder = OFFICIAL_REPO_PREFIX + remainder
    return domain, remainder


def _parse(s: str) -> Reference:
    """docker's reference.Parse on an already normalised string."""
    m = REFERENCE_RE.match(s)
    if m is None:
        if not s:
            raise ReferenceError("repository name must have at least one component")
        if REFERENCE_RE.match(s.lower()):
            raise ReferenceError("repository name must be lowercase")
        raise ReferenceError("invalid reference format")
    name, tag, digest = m.group(1), m.group(2) or "", m.group(3) or ""
    if len(name) > NAME_TOTAL_LENGTH_MAX:
        raise ReferenceError(f"repository name must not be more than {NAME_TOTAL_LENGTH_MAX} characters")
    nm = _ANCHORED_NAME.match(name)
    assert nm is not None
    domain, path = nm.group(1) or "", nm.group(2)
    if digest:
        # go-digest's Parse: only sha256 is known here; its hex is exact.
        algorithm, _, hexpart = digest.partition(":")
        if algorithm != "sha256":
            raise ReferenceError("unsupported digest algorithm")
        if len(hexpart) != 64:
            raise ReferenceError("invalid checksum digest length")
        if hexpart.lower() != hexpart:
            raise ReferenceError("invalid checksum digest format")
    return Reference(domain, path, tag, digest)


def parse_normalized(s: str) -> Reference:
    """
    docker's ParseNormalizedNamed: C{busybox} -> docker.io/library/busybox.
    InvalidArgument with docker's message for what docker refuses.
    """
    if _IDENTIFIER.match(s):
        raise ReferenceError(
            f"invalid repository name ({s}), cannot specify 64-byte hexadecimal strings"
        )
    domain, remainder = _split_docker_domain(s)
    tag_sep = remainder.find(":")
    remote = remainder[:tag_sep] if tag_sep > -1 else remainder
    if remote.lower() != remote:
        raise ReferenceError(f"invalid reference format: repository name ({remote}) must be lowercase")
    ref = _parse(domain + "/" + remainder)
    if not ref.domain:
        raise ReferenceError("invalid reference format")
    return ref


def parse_tag(s: str) -> Reference:
    """
    A reference to tag an image with (`ross tag`, import, load): a name,
    with ":latest" when no tag is given; digests refused as docker does.
    """
    ref = parse_normalized(s)
    if ref.digest:
        raise InvalidArgument("refusing to create a tag with a digest reference")
    return ref.with_default_tag()


def is_image_id(s: str) -> bool:
    """A full image ID: "sha256:<64 hex>" or 64 hex."""
    return bool(_SHA256.match(s) or _IDENTIFIER.match(s))


def is_id_prefix(s: str) -> bool:
    """Something docker would try as an abbreviated image ID."""
    if s.startswith("sha256:"):
        s = s[len("sha256:"):]
    return bool(re.match(r"^[a-f0-9]{1,64}$", s))


def familiar(name: str) -> str:
    """Familiar form of a stored normalised reference string."""
    return parse_normalized(name).familiar()


def valid_domain(domain: str) -> bool:
    """A registry as a reference names it: "HOST", "HOST:PORT", "[IPv6]:PORT"."""
    return bool(_ANCHORED_DOMAIN.match(domain))


def valid_tag(tag: str) -> bool:
    return bool(_ANCHORED_TAG.match(tag))


def registry_domain(server: str) -> str:
    """
    The registry a ``ross login`` server address names: "localhost:5000"
    for "http://localhost:5000/v2/", "docker.io" for docker's
    "https://index.docker.io/v1/" or an empty address.
    """
    text = server.strip()
    if not text:
        return DEFAULT_DOMAIN
    if "://" in text:
        try:
            text = urlsplit(text).netloc
        except ValueError:
            text = ""
    text = text.split("/", 1)[0].lower()
    if not valid_domain(text):
        raise InvalidArgument(f"invalid registry address {server[:256]!r}: not a host name or HOST:PORT")
    if text in (LEGACY_DEFAULT_DOMAIN, "registry-1.docker.io", DEFAULT_DOMAIN):
        return DEFAULT_DOMAIN
    return text
