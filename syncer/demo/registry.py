"""A real CNCF distribution registry (``docker-registry serve``) as a native process.

Each ``Registry`` owns a directory with its config, storage, TLS material, htpasswd file and
log. The access log (one Apache-style line per request, status included, also for 401s) is
what ``requests()`` parses, so tests and benchmarks can count what a client really asked.
Requests the harness makes itself (readiness polls, log barriers, push checks) carry
``HARNESS_AGENT`` and are left out of the count.
"""

from __future__ import annotations

import atexit
import base64
import datetime
import ipaddress
import json
import re
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, ClassVar, Protocol

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

HARNESS_AGENT = "syncer-test-harness"
STARTUP_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0

# gorilla's CombinedLoggingHandler, which distribution wraps around every request:
# 127.0.0.1 - - [26/Nov/2026:23:06:56 +0000] "GET /v2/ HTTP/1.1" 200 2 "" "curl/7.88.1"
_ACCESS_LINE = re.compile(
    r'^\S+ \S+ \S+ \[[^\]]*\] "(?P<method>[A-Z]+) (?P<uri>\S+) HTTP/[\d.]+" '
    r'(?P<status>\d{3}) \S+ "[^"]*" "(?P<agent>.*)"$'
)


@dataclass(frozen=True)
class Request:
    """One request the registry served, as its access log recorded it."""

    method: str
    uri: str  # path and query, as sent
    status: int

    @property
    def path(self) -> str:
        return self.uri.split("?", 1)[0]


# Registries still running when the interpreter exits (a script or benchmark that did not
# stop them, a test session torn down early) are stopped then, not left behind.
_running: set[Registry] = set()


@atexit.register
def _stop_leftovers() -> None:
    for reg in list(_running):
        reg.stop()


class RegistryStartError(RuntimeError):
    """The registry process did not come up; the message carries the tail of its log."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_tls_material(directory: Path, *, client: bool = False) -> tuple[Path, Path, Path]:
    """Writes a fresh CA and a server certificate for 127.0.0.1 and localhost.

    Returns (ca.crt, server.crt, server.key). EC keys because they are generated in
    milliseconds; Go's TLS stack (distribution, skopeo) needs the SANs, not the CN. With
    ``client``, the certificate is a client's (Go checks the extended key usage) and the files
    are named as in a certs.d directory: (ca.crt, client.cert, client.key).
    """
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    not_before, not_after = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=2)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "syncer test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )

    ca_file = directory / "ca.crt"
    cert_file = directory / ("client.cert" if client else "server.crt")
    key_file = directory / ("client.key" if client else "server.key")
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)
    return ca_file, cert_file, key_file


def write_htpasswd(path: Path, username: str, password: str) -> None:
    # -i reads the password from stdin, so it never shows up in a process listing.
    result = subprocess.run(
        ["htpasswd", "-iBn", username],
        input=password,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"htpasswd failed for user {username!r}: {result.stderr.strip()}")
    path.write_text(result.stdout)
    path.chmod(0o600)


def terminate(process: subprocess.Popen[bytes] | None, timeout: float = STOP_TIMEOUT) -> None:
    """Stops a server process: SIGTERM, then SIGKILL if it lingers; nothing if it has ended."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)


class RegistryProcess(Protocol):
    """A running ``docker-registry serve``, however it was started."""

    def poll(self) -> int | None:
        """None while it runs, else its exit status."""

    def stop(self, timeout: float) -> None:
        """Ends it (forcibly after ``timeout`` seconds); nothing if it has ended."""


# Starts ``docker-registry serve CONFIG`` for a registry whose directory is ``workdir``,
# with stdout and stderr appended to ``log``.
Launcher = Callable[[Path, Path, BinaryIO], RegistryProcess]


@dataclass
class _NativeProcess:
    popen: subprocess.Popen[bytes]

    def poll(self) -> int | None:
        return self.popen.poll()

    def stop(self, timeout: float) -> None:
        terminate(self.popen, timeout)


def native_launcher(workdir: Path, config_file: Path, log: BinaryIO) -> RegistryProcess:
    return _NativeProcess(
        subprocess.Popen(
            ["docker-registry", "serve", str(config_file)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    )


class Registry:
    """A distribution registry on 127.0.0.1 with its own storage, stopped by ``stop()``.

    ``stop()`` then ``start()`` brings it back on the same port with the same storage, to
    simulate an outage. The constructor starts it. ``launcher`` starts the process: a native
    one by default; the test suite's docker mode (tests/harness/docker.py) swaps in one that
    runs it as a container, with the same config, storage and log.
    """

    launcher: ClassVar[Launcher] = staticmethod(native_launcher)

    def __init__(
        self,
        workdir: Path,
        *,
        htpasswd: tuple[str, str] | None = None,
        auth: dict | None = None,
        tls: bool = False,
        client_auth: bool = False,
        delete: bool = False,
        port: int | None = None,
    ) -> None:
        if htpasswd and auth:
            raise ValueError("a registry has one auth section: pass htpasswd or auth, not both")
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.storage_dir = self.workdir / "storage"
        self.storage_dir.mkdir(exist_ok=True)
        self.log_file = self.workdir / "registry.log"
        self.config_file = self.workdir / "config.yml"
        self.username: str | None = htpasswd[0] if htpasswd else None
        self.password: str | None = htpasswd[1] if htpasswd else None
        self.tls = tls
        self.delete = delete
        self.ca_file: Path | None = None
        self.cert_dir: Path | None = None
        self._server_cert: tuple[Path, Path] | None = None
        if tls:
            # cert_dir holds only ca.crt: skopeo would take *.cert/*.key there as a client cert.
            self.cert_dir = self.workdir / "certs"
            self.ca_file, cert, key = make_tls_material(self.workdir / "tls")
            self.cert_dir.mkdir(exist_ok=True)
            (self.cert_dir / "ca.crt").write_bytes(self.ca_file.read_bytes())
            self._server_cert = (cert, key)
        # With client_auth the registry requires a certificate of its own client CA, which
        # cert_dir then holds as skopeo wants it (client.cert, client.key).
        self.client_ca: Path | None = None
        self.client_cert: tuple[Path, Path] | None = None
        if tls and client_auth:
            self.client_ca, client_cert, client_key = make_tls_material(
                self.workdir / "client-tls", client=True
            )
            self.client_cert = (client_cert, client_key)
            assert self.cert_dir is not None  # made above for every TLS registry
            for path in self.client_cert:
                (self.cert_dir / path.name).write_bytes(path.read_bytes())
        # Any other auth section of distribution's config.yml, as given (e.g. the token
        # section `syncer access-config` prints).
        self._auth = auth
        self._htpasswd_file: Path | None = None
        if htpasswd:
            self._htpasswd_file = self.workdir / "htpasswd"
            write_htpasswd(self._htpasswd_file, *htpasswd)
        self._authfile: Path | None = None
        self._process: RegistryProcess | None = None
        self.port = 0
        self._start_on_free_port(preferred=port)

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- addresses -----------------------------------------------------------------------

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # --- lifecycle -----------------------------------------------------------------------

    def _start_on_free_port(self, preferred: int | None = None) -> None:
        # Another process may take the port between free_port() and the bind: try again.
        # A preferred port (the demo keeps its addresses across invocations) is tried first.
        for attempt in range(3):
            self.port = preferred if preferred and attempt == 0 else free_port()
            try:
                self.start()
                return
            except RegistryStartError:
                if attempt == 2 or "address already in use" not in self._log_tail():
                    raise

    def start(self) -> None:
        """Starts the process on ``self.port`` and waits until ``/v2/`` answers."""
        if self.running:
            return
        self._write_config()
        with self.log_file.open("ab") as log:
            log_offset = log.tell()
            self._process = type(self).launcher(self.workdir, self.config_file, log)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                process, self._process = self._process, None
                process.stop(STOP_TIMEOUT)  # a container that exited is still to be removed
                raise RegistryStartError(
                    f"docker-registry on {self.host} exited at startup; log:\n{self._log_tail()}"
                )
            # Our own "listening on" line first: whoever else took the port would answer too.
            if self._logged_listening(log_offset) and self._answers():
                _running.add(self)
                return
            time.sleep(0.01)
        self.stop()
        raise RegistryStartError(
            f"docker-registry on {self.host} did not answer /v2/ within {STARTUP_TIMEOUT}s; "
            f"log:\n{self._log_tail()}"
        )

    def stop(self) -> None:
        """Terminates the process (then kills it if it lingers); storage is kept."""
        process, self._process = self._process, None
        _running.discard(self)
        if process is not None:
            process.stop(STOP_TIMEOUT)

    def _write_config(self) -> None:
        http: dict[str, object] = {
            "addr": self.host,
            # A fixed secret keeps upload sessions valid across stop()/start().
            "secret": "syncer-test-harness-upload-secret",
        }
        if self._server_cert:
            tls: dict[str, object] = {
                "certificate": str(self._server_cert[0]),
                "key": str(self._server_cert[1]),
            }
            if self.client_ca:
                tls["clientcas"] = [str(self.client_ca)]
            http["tls"] = tls
        config: dict[str, object] = {
            "version": 0.1,
            "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": False}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.storage_dir)},
                "delete": {"enabled": self.delete},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": http,
        }
        if self._htpasswd_file:
            config["auth"] = {"htpasswd": {"realm": "syncer-test", "path": str(self._htpasswd_file)}}
        elif self._auth:
            config["auth"] = self._auth
        # JSON is YAML, and needs no quoting rules of its own.
        self.config_file.write_text(json.dumps(config, indent=2))

    def _logged_listening(self, offset: int) -> bool:
        with self.log_file.open("rb") as log:
            log.seek(offset)
            return f"listening on {self.host}".encode() in log.read()

    def _answers(self) -> bool:
        try:
            with self.session(auth=False) as session:
                session.get(f"{self.url}/v2/", headers={"User-Agent": HARNESS_AGENT}, timeout=1)
        except requests.exceptions.SSLError:
            raise  # a TLS setup fault would otherwise look like "not up yet" until the timeout
        except requests.ConnectionError:
            return False
        return True

    def _log_tail(self, lines: int = 20) -> str:
        if not self.log_file.exists():
            return "(no log)"
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])

    # --- clients -------------------------------------------------------------------------

    @property
    def verify(self) -> str | bool:
        """What ``requests`` needs as ``verify=`` to trust this registry."""
        return str(self.ca_file) if self.ca_file else True

    def session(self, *, auth: bool = True) -> requests.Session:
        """A requests session that trusts the registry's CA and, if asked, logs in."""
        session = requests.Session()
        # Without this, REQUESTS_CA_BUNDLE in the environment overrides session.verify.
        session.trust_env = False
        session.verify = self.verify
        if self.client_cert:
            session.cert = (str(self.client_cert[0]), str(self.client_cert[1]))
        if auth and self.username is not None:
            session.auth = (self.username, self.password or "")
        return session

    @property
    def authfile(self) -> Path | None:
        """A containers-auth.json for this registry (skopeo ``--authfile``), None without auth."""
        if self.username is None:
            return None
        if self._authfile is None:
            token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            self._authfile = self.workdir / "auth.json"
            self._authfile.touch(mode=0o600)
            self._authfile.write_text(json.dumps({"auths": {self.host: {"auth": token}}}))
        return self._authfile

    def skopeo_flags(self, prefix: str = "") -> list[str]:
        """skopeo options to reach this registry: ``prefix`` is "", "src" or "dest".

        Credentials go through an auth file, never the command line.
        """
        dash = f"--{prefix}-" if prefix else "--"
        flags = [f"{dash}cert-dir", str(self.cert_dir)] if self.cert_dir else [f"{dash}tls-verify=false"]
        if self.authfile is not None:
            flags += [f"{dash}authfile", str(self.authfile)]
        return flags

    # --- access log ----------------------------------------------------------------------

    def requests(self) -> list[Request]:
        """Every request clients made so far, oldest first, across restarts.

        The registry logs a request as its handler returns, a moment after a client may have
        read the response; waiting until a fresh request of ours is logged closes that gap.
        """
        if self.running:
            self._barrier()
        found = []
        for line in self.log_file.read_text(errors="replace").splitlines():
            match = _ACCESS_LINE.match(line)
            if match and not match["agent"].startswith(HARNESS_AGENT):
                found.append(Request(match["method"], match["uri"], int(match["status"])))
        return found

    def count(self, method: str, path_contains: str = "") -> int:
        """How many ``method`` requests had ``path_contains`` in their path (query excluded)."""
        return sum(1 for r in self.requests() if r.method == method and path_contains in r.path)

    def _barrier(self) -> None:
        agent = f"{HARNESS_AGENT} barrier-{uuid.uuid4().hex}"
        with self.session(auth=False) as session:
            session.get(f"{self.url}/v2/", headers={"User-Agent": agent}, timeout=5)
        deadline = time.monotonic() + 5
        while agent not in self.log_file.read_text(errors="replace"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"registry {self.host} did not log the barrier request")
            time.sleep(0.005)
