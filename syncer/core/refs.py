"""Image references: the grammar of github.com/distribution/reference, and safe report paths.

Everything that comes from the catalog and later names a registry object or a file is checked
here first, so that a malformed value is rejected with a reason instead of reaching skopeo, a
registry URL or a path under ``reports/``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DOCKER_HUB = "docker.io"
_LEGACY_HUB = "index.docker.io"
_OFFICIAL_PREFIX = "library/"
_LOCALHOST = "localhost"
# distribution rejects names (domain and path) longer than this.
NAME_MAX = 255

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_REMOTE_NAME = rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*"
# IPv6 zone identifiers and IPv4-mapped forms are deliberately excluded, as in distribution.
_IPV6 = r"\[[a-fA-F0-9:]+\]"
_DOMAIN = rf"(?:{_DOMAIN_NAME}|{_IPV6})(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"

_PATH_COMPONENT_RE = re.compile(_PATH_COMPONENT)
_REMOTE_NAME_RE = re.compile(_REMOTE_NAME)
_DOMAIN_RE = re.compile(_DOMAIN)
_TAG_RE = re.compile(_TAG, re.ASCII)
_DIGEST_RE = re.compile(_DIGEST)
_IDENTIFIER_RE = re.compile(r"[a-f0-9]{64}")
_SHA256_RE = re.compile(r"sha256:[a-f0-9]{64}")

# go-digest's registered algorithms: their encoded part has a fixed length in lower-case hex.
_DIGEST_HEX_LENGTH = {"sha256": 64, "sha384": 96, "sha512": 128}


@dataclass(frozen=True)
class Reference:
    """A normalised reference: ``registry/repository[:tag][@digest]``."""

    registry: str  # host[:port]; docker.io for Docker Hub
    repository: str  # path on that registry; library/nginx for Hub's official images
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """The repository with its registry, without tag or digest."""
        return f"{self.registry}/{self.repository}"

    @property
    def familiar_path(self) -> str:
        """The repository path as people write it: Hub's ``library/`` dropped (nginx, bitnami/redis)."""
        if self.registry == DOCKER_HUB and self.repository.startswith(_OFFICIAL_PREFIX):
            rest = self.repository[len(_OFFICIAL_PREFIX) :]
            if "/" not in rest:
                return rest
        return self.repository

    def __str__(self) -> str:
        text = self.name
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text


def is_valid_tag(text: str) -> bool:
    return _TAG_RE.fullmatch(text) is not None


def is_valid_digest(text: str) -> bool:
    """The reference grammar's ``algorithm:hex``; registered algorithms must have their exact length."""
    if _DIGEST_RE.fullmatch(text) is None:
        return False
    algorithm, encoded = text.split(":", 1)
    length = _DIGEST_HEX_LENGTH.get(algorithm)
    if length is None:
        return True
    return len(encoded) == length and encoded == encoded.lower()


def is_sha256_digest(text: str) -> bool:
    """What registries and this pipeline actually use: ``sha256:`` and 64 lower-case hex digits."""
    return _SHA256_RE.fullmatch(text) is not None


def is_valid_domain(text: str) -> bool:
    """A registry host as references write it: ``host[:port]``, IPv6 in brackets."""
    return _DOMAIN_RE.fullmatch(text) is not None


def is_valid_repository_path(text: str) -> bool:
    return _REMOTE_NAME_RE.fullmatch(text) is not None


def parse_reference(text: str) -> Reference:
    """Parses and normalises like Docker: ``nginx`` is ``docker.io/library/nginx``.

    Raises ValueError whose message says which part is wrong and why.
    """
    if not isinstance(text, str) or not text:
        raise ValueError("reference is empty")
    if text != text.strip():
        raise ValueError("reference has leading or trailing whitespace")
    if _IDENTIFIER_RE.fullmatch(text):
        raise ValueError("reference is a bare 64-digit hex identifier, not a repository name")

    rest, digest = _split_digest(text)
    name, tag = _split_tag(rest)
    registry, repository = _split_domain(name)

    if not repository:
        raise ValueError("reference has no repository path after the registry")
    if repository != repository.lower():
        raise ValueError(f"repository path '{repository}' must be lowercase")
    for component in repository.split("/"):
        if not component:
            raise ValueError(f"repository path '{repository}' has an empty component")
        if _PATH_COMPONENT_RE.fullmatch(component) is None:
            raise ValueError(
                f"repository path component '{component}' is invalid: use lowercase letters and "
                "digits, separated by '.', '_', '__' or dashes, not at the start or end"
            )
    if not is_valid_domain(registry):
        raise ValueError(f"registry '{registry}' is not a valid host[:port]")
    if len(f"{registry}/{repository}") > NAME_MAX:
        raise ValueError(f"repository name is longer than {NAME_MAX} characters")
    if tag is not None and not is_valid_tag(tag):
        raise ValueError(
            f"tag '{tag}' is invalid: up to 128 letters, digits, '_', '.' or '-', "
            "not starting with '.' or '-'"
        )
    if digest is not None and not is_valid_digest(digest):
        raise ValueError(f"digest '{digest}' is invalid: expected algorithm:hex, e.g. sha256:<64 hex digits>")
    return Reference(registry, repository, tag, digest)


def _split_digest(text: str) -> tuple[str, str | None]:
    if "@" not in text:
        return text, None
    rest, digest = text.split("@", 1)
    if not digest:
        raise ValueError("reference ends with '@' but has no digest")
    return rest, digest


def _split_tag(text: str) -> tuple[str, str | None]:
    # A ':' after the last '/' separates the tag; one before it belongs to host:port.
    slash = text.rfind("/")
    colon = text.rfind(":")
    if colon <= slash:
        return text, None
    tag = text[colon + 1 :]
    if not tag:
        raise ValueError("reference ends with ':' but has no tag")
    return text[:colon], tag


def _split_domain(name: str) -> tuple[str, str]:
    first, sep, remainder = name.partition("/")
    if not sep:
        return DOCKER_HUB, _OFFICIAL_PREFIX + name
    if first == _LEGACY_HUB:
        registry, path = DOCKER_HUB, remainder
    elif first == _LOCALHOST or any(c in first for c in ".:") or first != first.lower():
        registry, path = first, remainder
    else:
        registry, path = DOCKER_HUB, name
    if registry == DOCKER_HUB and path and "/" not in path:
        path = _OFFICIAL_PREFIX + path
    return registry, path


def safe_relpath(name: str) -> str:
    """Returns ``name`` if it can be used as a relative path under ``reports/``; else ValueError.

    Names become directories (``reports/records/<name>/``), so they must follow the repository
    path grammar, which by construction excludes ``..``, absolute paths and empty segments.
    """
    if not isinstance(name, str) or not name:
        raise ValueError("name is empty")
    if "\\" in name:
        raise ValueError(f"name '{name}' contains a backslash; separate path components with '/'")
    if name.startswith("/"):
        raise ValueError(f"name '{name}' is an absolute path; write it without the leading '/'")
    segments = name.split("/")
    if any(s in (".", "..") for s in segments):
        raise ValueError(f"name '{name}' contains a '.' or '..' segment")
    if any(s == "" for s in segments):
        raise ValueError(f"name '{name}' has an empty path segment ('//' or a trailing '/')")
    if name != name.lower():
        raise ValueError(f"name '{name}' must be lowercase")
    if not is_valid_repository_path(name):
        raise ValueError(
            f"name '{name}' is not a valid repository path: use lowercase letters and digits, "
            "separated by '.', '_', '__', dashes or '/'"
        )
    return name


def short_digest(digest: str | None) -> str:
    """The first 12 hex digits, as pages and plans show a digest ("" for none)."""
    return digest.split(":", 1)[-1][:12] if digest else ""


_VERSION_PART = re.compile(r"(\d+)|(\D+)")


def version_key(tag: str) -> tuple[tuple[tuple[int, int, str], ...], str]:
    """How pages sort tags: runs of digits compare as numbers, so 1.2.0 comes before 1.10.0
    and 9-alpine before 10-alpine; other runs compare as text, after a number at the same
    place. The tag itself breaks ties (1.07 and 1.7), so the order is total for any tags."""
    parts = tuple(
        (0, int(digits), "") if digits else (1, 0, other) for digits, other in _VERSION_PART.findall(tag)
    )
    return parts, tag
