"""Registry credentials where skopeo, podman and docker keep them, for a registry whose entry
in settings.yaml has no ``auth`` block: a runner already logged in with ``docker login``,
``skopeo login`` or ``podman login`` is logged in for syncer too.

The files are read in containers-auth.json(5)'s order (containers/image,
pkg/docker/config): ``$REGISTRY_AUTH_FILE`` alone when it is set; otherwise
``$XDG_RUNTIME_DIR/containers/auth.json`` (``/run/containers/$UID/auth.json`` without it),
``${XDG_CONFIG_HOME:-$HOME/.config}/containers/auth.json``, ``$DOCKER_CONFIG/config.json``
(``$HOME/.docker/config.json`` without it) and the legacy ``$HOME/.dockercfg``. The first file
that has an answer for the registry gives it. In one file a ``credHelpers`` entry for the
registry comes first, then docker's ``credsStore`` (which containers/image does not read;
docker does, and syncer passes what it found to skopeo itself), then ``auths``. An ``auths``
key is matched as the registry (``host[:port]``), else as docker writes keys: a URL
(``https://host/v1/``), Docker Hub as ``index.docker.io`` or ``registry-1.docker.io``.

One credential serves a whole registry (syncer keeps one client per registry), so
namespace keys (``host/namespace``), which containers/image matches per repository, are
not used. The secret is registered with ``syncer.core.redact`` as soon as it is read.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from syncer.core import redact
from syncer.errors import CredentialError
from syncer.tools.registry import Credentials

HUB = "docker.io"
# Docker Hub's key in docker's config.json and what docker hands its credential helpers.
HUB_INDEX = "https://index.docker.io/v1/"
_HUB_NAMES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
HELPER_TIMEOUT = 30.0  # seconds; a helper waiting on a locked keyring must not hang the run
# What docker-credential-helpers print when they hold nothing for a server.
_NOT_FOUND = "credentials not found in native keychain"


@dataclass(frozen=True)
class AuthFile:
    path: str
    legacy: bool = False  # ~/.dockercfg: registry entries at the top level, no "auths"


@dataclass(frozen=True)
class Found:
    credentials: Credentials  # its origin names the file and entry, or the helper
    source: str  # the same, for the run's output: where the credential came from


@dataclass(frozen=True)
class HelperAnswer:
    username: str
    secret: str


# Runs ``docker-credential-NAME get`` for a server; None when the helper holds nothing for it.
HelperRunner = Callable[[str, str, str], "HelperAnswer | None"]


def auth_files(environ: Mapping[str, str], uid: int) -> list[AuthFile]:
    """The files to read, in order (pure)."""
    explicit = environ.get("REGISTRY_AUTH_FILE")
    if explicit:
        return [AuthFile(explicit)]
    home = environ.get("HOME") or os.path.expanduser("~")
    runtime = environ.get("XDG_RUNTIME_DIR")
    config_home = environ.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
    docker = environ.get("DOCKER_CONFIG") or os.path.join(home, ".docker")
    return [
        AuthFile(
            os.path.join(runtime, "containers", "auth.json")
            if runtime
            else f"/run/containers/{uid}/auth.json"
        ),
        AuthFile(os.path.join(config_home, "containers", "auth.json")),
        AuthFile(os.path.join(docker, "config.json")),
        AuthFile(os.path.join(home, ".dockercfg"), legacy=True),
    ]


def lookup(
    registry: str, *, environ: Mapping[str, str] | None = None, run_helper: HelperRunner | None = None
) -> Found | None:
    """The credential for ``registry`` (``host[:port]`` as contacted) from the first auth file
    or credential helper that has one; None when none has. CredentialError when a file cannot
    be read or a helper not run."""
    environ = os.environ if environ is None else environ
    run_helper = run_helper or _run_helper(environ)
    for auth_file in auth_files(environ, os.getuid()):
        document = _read(auth_file)
        if document is None:
            continue
        found = _in_file(registry, auth_file, document, run_helper)
        if found is not None:
            redact.remember_credentials(found.credentials.username, found.credentials.password)
            return found
    return None


def _read(auth_file: AuthFile) -> dict | None:
    try:
        with open(auth_file.path, "rb") as f:
            text = f.read()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise CredentialError(
            f"auth file {auth_file.path} cannot be read ({err.strerror}); make it readable by "
            "this user, or remove it"
        ) from None
    try:
        document = json.loads(text)
    except ValueError as err:
        where = f" at line {err.lineno}" if isinstance(err, json.JSONDecodeError) else ""
        raise CredentialError(
            f"auth file {auth_file.path} is not valid JSON{where}; fix it or remove it and "
            "log in again (docker login, skopeo login or podman login write it)"
        ) from None
    if not isinstance(document, dict):
        raise CredentialError(
            f"auth file {auth_file.path} does not hold a JSON object; fix it or remove it and log in again"
        )
    return document


def _in_file(registry: str, auth_file: AuthFile, document: dict, run_helper: HelperRunner) -> Found | None:
    if not auth_file.legacy:
        helpers = _object(document, "credHelpers", auth_file)
        key = _matching_key(registry, helpers, legacy=False)
        if key is not None:
            name = helpers[key]
            return _from_helper(registry, name, f"credHelpers entry {key!r} in {auth_file.path}", run_helper)
        store = document.get("credsStore")
        if isinstance(store, str) and store:
            found = _from_helper(registry, store, f"credsStore in {auth_file.path}", run_helper)
            if found is not None:
                return found
    auths = document if auth_file.legacy else _object(document, "auths", auth_file)
    key = _matching_key(registry, auths, legacy=auth_file.legacy)
    if key is None:
        return None
    return _from_entry(auths[key], key, auth_file)


def _object(document: dict, name: str, auth_file: AuthFile) -> dict:
    value = document.get(name, {})
    if not isinstance(value, dict):
        raise CredentialError(
            f"auth file {auth_file.path}: {name!r} is not a JSON object; fix "
            "it or remove the file and log in again"
        )
    return value


def _matching_key(registry: str, entries: dict, *, legacy: bool) -> str | None:
    """The entry for ``registry``: an exact key first, then one that names it as docker does."""
    if registry in entries:
        return registry
    wanted = _normalised(registry)
    return next(
        (k for k in entries if isinstance(k, str) and _normalised(_key_host(k, legacy)) == wanted), None
    )


def _key_host(key: str, legacy: bool) -> str:
    stripped = key.removeprefix("http://").removeprefix("https://")
    if legacy or stripped != key:
        stripped = stripped.split("/", 1)[0]
    return stripped


def _normalised(host: str) -> str:
    return "index.docker.io" if host in _HUB_NAMES else host


def _from_entry(entry: object, key: str, auth_file: AuthFile) -> Found | None:
    where = f"{auth_file.path} (entry {key!r})"
    if not isinstance(entry, dict):
        raise CredentialError(f"auth file {where} is not a JSON object; fix it or log in again")
    if entry.get("identitytoken"):
        raise CredentialError(
            f"auth file {where} holds an identity token (an OAuth login), which syncer cannot "
            "use; log in with a username and password or token, or set auth in "
            "catalog/settings.yaml"
        )
    encoded = entry.get("auth")
    if not encoded:
        return None  # docker's marker beside a credential helper: nothing stored here
    try:
        decoded = base64.b64decode(str(encoded), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise CredentialError(
            f"auth file {where}: 'auth' is not base64 of user:password; log in again to rewrite it"
        ) from None
    username, sep, password = decoded.partition(":")
    if not sep:
        raise CredentialError(
            f"auth file {where}: 'auth' holds no ':' between user and password; log in again to rewrite it"
        )
    source = f"auth file {where}"
    return Found(Credentials(username, password.strip("\x00"), origin=source), source)


def _from_helper(registry: str, name: str, configured: str, run_helper: HelperRunner) -> Found | None:
    if not isinstance(name, str) or not name or "/" in name:
        raise CredentialError(
            f"{configured} names no credential helper; write the NAME of docker-credential-NAME"
        )
    # docker asks a helper for Hub under its index URL, containers/image under docker.io.
    servers = (HUB_INDEX, HUB) if _normalised(registry) == "index.docker.io" else (registry,)
    for server in servers:
        answer = run_helper(name, server, configured)
        if answer is None:
            continue
        if answer.username == "<token>":
            raise CredentialError(
                f"credential helper docker-credential-{name} ({configured}) gave an identity "
                f"token for {server}, which syncer cannot use; store a username and password "
                "or token, or set auth in catalog/settings.yaml"
            )
        source = f"credential helper docker-credential-{name} ({configured})"
        return Found(Credentials(answer.username, answer.secret, origin=source), source)
    return None


def _run_helper(environ: Mapping[str, str]) -> HelperRunner:
    def run(name: str, server: str, configured: str) -> HelperAnswer | None:
        program = f"docker-credential-{name}"
        path = shutil.which(program, path=environ.get("PATH"))
        if path is None:
            raise CredentialError(
                f"credential helper {program} ({configured}) is not on PATH; install it, or "
                "remove the entry from that file"
            )
        try:
            # The helpers read keyrings, GPG agents and D-Bus: they get the whole environment.
            done = subprocess.run(
                [path, "get"],
                input=server.encode(),
                capture_output=True,
                timeout=HELPER_TIMEOUT,
                env=dict(environ),
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise CredentialError(
                f"credential helper {program} ({configured}) did not answer "
                f"within {HELPER_TIMEOUT:g}s for {server}; unlock its "
                "keyring or remove the entry"
            ) from None
        output = done.stdout.decode("utf-8", "replace").strip()
        if done.returncode != 0:
            if _NOT_FOUND in output.lower() or _NOT_FOUND in done.stderr.decode("utf-8", "replace").lower():
                return None
            reason = (done.stderr.decode("utf-8", "replace").strip() or output)[:200]
            raise CredentialError(
                f"credential helper {program} ({configured}) failed for "
                f"{server} (exit {done.returncode}): {redact.redact(reason)}"
            )
        try:
            answer = json.loads(output)
            username, secret = answer["Username"], answer["Secret"]
            if not isinstance(username, str) or not isinstance(secret, str):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            raise CredentialError(
                f"credential helper {program} ({configured}) printed no "
                "JSON object with Username and Secret for "
                f"{server}"
            ) from None
        redact.remember_credentials(username, secret)
        return HelperAnswer(username, secret) if secret else None

    return run
