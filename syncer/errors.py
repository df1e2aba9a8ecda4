"""Typed errors. Every message says what is wrong, where, and what to do.

The CLI maps them to exit codes: ``UsageError`` and ``CatalogError`` exit 2; the
others, raised for one image, mark that image failed (exit 1) without stopping the run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from syncer.core.model import Location
from syncer.core.redact import redact


class SyncerError(Exception):
    """Base class: ``str(err)`` is a complete, user-facing message, without any secret
    (``syncer.core.redact``): whatever text of an answer it quotes, it can be printed and kept."""

    def __init__(self, *args: object):
        super().__init__(*(redact(a) if isinstance(a, str) else a for a in args))


class UsageError(SyncerError):
    """Bad command line or environment (missing variable, missing file)."""


@dataclass(frozen=True)
class Diagnostic:
    location: Location
    message: str
    level: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        return f"{self.location}: {self.level}: {self.message}"


class CredentialError(UsageError):
    """An auth file or credential helper (docker login, skopeo login, podman login) could not
    be read or run; the message names the file, or the helper and where it was configured."""


class CatalogError(SyncerError):
    def __init__(self, diagnostics: list[Diagnostic]):
        self.diagnostics = diagnostics
        errors = [d for d in diagnostics if d.level == "error"]
        super().__init__("\n".join(str(d) for d in errors) or "invalid catalog")


class RegistryError(SyncerError):
    """A registry answered with an error or could not be reached."""

    def __init__(self, message: str, *, registry: str = "", status: int | None = None):
        super().__init__(message)
        self.registry = registry
        self.status = status


class DigestMismatchError(RegistryError):
    """An answer is of another digest than the one asked for or announced: a registry, mirror
    or proxy that rewrites answers. ``expected`` is what the client asked for (or the registry
    announced), ``found`` what it was given."""

    def __init__(self, message: str, *, registry: str, expected: str, found: str):
        super().__init__(message, registry=registry)
        self.expected = expected
        self.found = found


class RegistryAuthError(RegistryError):
    """Credentials missing or refused."""


class NotFoundError(RegistryError):
    """Repository, tag or manifest does not exist."""


class RateLimitError(RegistryError):
    """Upstream pull budget too low (``min_remaining_pulls``) or 429 after retries."""


class SkopeoError(SyncerError):
    """A skopeo command failed; the message is skopeo's reason without credentials."""


class TrivyError(SyncerError):
    """Trivy failed, timed out, or printed something we could not read."""


class SigningError(SyncerError):
    """A key could not be read, a signature not made, stored or verified."""


class UnsafePathError(SyncerError, ValueError):
    """A path under the audit trail is a symlink, or not the kind of file it must be; a
    ValueError too, as a path outside the reference grammar is."""


class GitError(SyncerError):
    """Committing or pushing the audit trail failed."""


def failure_text(err: BaseException) -> str:
    """What a last-resort handler records for ``err``: a SyncerError's own message; for any
    other exception (a bug, as every boundary raises typed errors), its type and redacted
    message, saying so."""
    if isinstance(err, SyncerError):
        return str(err)
    return (
        f"internal error: {type(err).__name__}: {redact(str(err))[:500]}; this is a bug in "
        "syncer, please report it with this message"
    )
