"""Which certificate authorities (and client certificate) a registry's TLS uses: one answer
for syncer's HTTP client, skopeo and Trivy.

Four places are read, as skopeo, podman and Go programs read them:

* ``ca_dir`` of the registry in settings.yaml, laid out as a certs.d directory: every
  ``*.crt`` is a CA, a ``NAME.cert``/``NAME.key`` pair a client certificate;
* ``/etc/containers/certs.d/HOST[:PORT]/`` and ``/etc/docker/certs.d/HOST[:PORT]/`` (the roots
  can be replaced by ``SYNCER_CERTS_D``, colon-separated, for tests and unusual hosts);
* ``SSL_CERT_FILE`` and ``SSL_CERT_DIR``, which replace the system's CA file and directories
  for a Go program (skopeo, Trivy) and which syncer's own client is given the same way.

Each tool then gets them in its own form: the HTTP client a bundle file (the system's CAs as
Go finds them, then the extra ones); skopeo ``--cert-dir`` (a directory holding the extra
CAs and the client pair: with it, skopeo reads no certs.d of its own, so every one that
applies is copied in); Trivy ``SSL_CERT_DIR`` with the extra CAs before the system's. The
copies live in one private directory per process, removed at exit.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import os
import re
import shutil
import tempfile
import threading
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import certifi

from syncer.errors import UsageError

CERTS_D_ENV = "SYNCER_CERTS_D"
CERTS_D_ROOTS = ("/etc/containers/certs.d", "/etc/docker/certs.d")
# Where Go's crypto/x509 looks on Linux when SSL_CERT_FILE / SSL_CERT_DIR are unset
# (root_linux.go): the first file that exists, and every file of every directory.
GO_CERT_FILES = (
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/tls/cacert.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
)
GO_CERT_DIRS = ("/etc/ssl/certs", "/etc/pki/tls/certs")
_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----\s.*?-----END CERTIFICATE-----", re.DOTALL)
_FILE_MAX = 4 << 20  # a CA file larger than this is not one


@dataclass(frozen=True)
class CertDir:
    path: str
    origin: str  # for messages: "ca_dir of target", "/etc/containers/certs.d/HOST"


@dataclass(frozen=True)
class Trust:
    """What a registry's TLS trusts beyond the system, and the client certificate it shows."""

    cas: tuple[str, ...] = ()  # *.crt files of every directory that applies
    client: tuple[str, str] | None = None  # (NAME.cert, NAME.key)
    cert_file: str | None = None  # SSL_CERT_FILE
    cert_dirs: tuple[str, ...] = ()  # SSL_CERT_DIR, split
    requests_bundle: str | None = None  # REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE: requests' own

    @property
    def configured(self) -> bool:
        return bool(self.cas or self.client or self.cert_file or self.cert_dirs)


def cert_dirs(
    address: str, ca_dir: str | None, what: str, environ: Mapping[str, str] | None = None
) -> list[CertDir]:
    """The certs.d directories that apply to ``address`` (host[:port] contacted), ``ca_dir``
    first; ``what`` names the settings entry (``target``, ``sources.docker.io``)."""
    environ = os.environ if environ is None else environ
    found = [CertDir(ca_dir, f"ca_dir of {what}")] if ca_dir else []
    roots = environ.get(CERTS_D_ENV)
    for root in roots.split(":") if roots is not None else CERTS_D_ROOTS:
        path = os.path.join(root, address) if root else ""
        if path and os.path.isdir(path):
            found.append(CertDir(path, path))
    return found


def resolve(address: str, ca_dir: str | None, what: str, environ: Mapping[str, str] | None = None) -> Trust:
    """The trust of one registry; UsageError for a directory that breaks it (``problems``)."""
    environ = os.environ if environ is None else environ
    cas: list[str] = []
    client: tuple[str, str] | None = None
    for d in cert_dirs(address, ca_dir, what, environ):
        found = problems(d)
        if found:
            raise UsageError(found[0])
        names = sorted(os.listdir(d.path))
        cas += [os.path.join(d.path, n) for n in names if n.endswith(".crt")]
        pairs = [n for n in names if n.endswith(".cert")]
        if client is None and pairs:
            client = (os.path.join(d.path, pairs[0]), os.path.join(d.path, pairs[0][:-5] + ".key"))
    return Trust(
        cas=tuple(cas),
        client=client,
        cert_file=environ.get("SSL_CERT_FILE") or None,
        cert_dirs=tuple(p for p in (environ.get("SSL_CERT_DIR") or "").split(":") if p),
        requests_bundle=environ.get("REQUESTS_CA_BUNDLE") or environ.get("CURL_CA_BUNDLE") or None,
    )


def problems(d: CertDir) -> list[str]:
    """What is wrong with one certs.d directory, each message naming the file and the remedy:
    a ``.cert`` without its ``.key`` is no client certificate (skopeo refuses it), and a
    ``.crt`` that holds no PEM certificate would leave the registry untrusted with a puzzling
    TLS error. Other files are left alone: only ``.crt`` and the pairs are copied for the tools
    (a server's own key kept beside its CA does no harm)."""
    if not os.path.isdir(d.path):
        return [
            (
                f"{d.origin}: {d.path} is not a directory (relative paths are from the "
                "directory syncer runs in); create it with the registry's CA as ca.crt, or "
                "fix the path"
            )
        ]
    found: list[str] = []
    names = sorted(os.listdir(d.path))
    for name in names:
        path = os.path.join(d.path, name)
        if name.endswith((".crt", ".cert")):
            reason = certificate_problem(path)
            if reason:
                found.append(
                    f"{d.origin}: {path} {reason}; put the PEM certificate there "
                    "(-----BEGIN CERTIFICATE-----), or remove the file"
                )
        if name.endswith(".cert") and name[:-5] + ".key" not in names:
            found.append(
                f"{d.origin}: client certificate {path} has no key "
                f"{name[:-5]}.key beside it; add the key, or rename a CA file to .crt"
            )
    return found


def certificate_problem(path: str) -> str:
    """Why ``path`` is not a file of PEM certificates, or ""."""
    try:
        with open(path, "rb") as f:
            data = f.read(_FILE_MAX + 1)
    except OSError as err:
        return f"cannot be read ({err.strerror})"
    if len(data) > _FILE_MAX:
        return f"is larger than {_FILE_MAX >> 20} MiB"
    from cryptography import x509  # only for a catalog that names certificates: a costly import

    try:
        # A system bundle holds old roots cryptography warns about (a serial number of
        # zero); Go accepts them, and the question here is only whether the file parses.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            x509.load_pem_x509_certificates(data)
    except ValueError:
        return "holds no PEM certificate that parses"
    return ""


# --- each tool's form -------------------------------------------------------------------------


@dataclass(frozen=True)
class Materialised:
    bundle: str | None  # for requests' verify=: None means requests' own default
    cert_dir: str | None  # for skopeo --cert-dir: extra CAs and the client pair
    ca_dir: str | None  # for Trivy's SSL_CERT_DIR: the extra CAs only


_made: dict[Trust, Materialised] = {}
_making = threading.Lock()


def materialise(trust: Trust) -> Materialised:
    """The files each tool reads ``trust`` from, made once per process (worker threads ask
    for the same registry's at once)."""
    with _making:
        if trust not in _made:
            _made[trust] = _materialise(trust)
        return _made[trust]


def _materialise(trust: Trust) -> Materialised:
    if not trust.configured:
        return Materialised(None, None, None)
    key = hashlib.sha256(repr(trust).encode()).hexdigest()[:16]
    base = os.path.join(_private_root(), key)
    os.mkdir(base, 0o700)
    blocks = _system_blocks(trust.cert_file, trust.cert_dirs)
    if trust.requests_bundle:
        blocks += _blocks(trust.requests_bundle)
    for path in trust.cas:
        blocks += _blocks(path)
    bundle = os.path.join(base, "bundle.pem")
    _write(bundle, b"\n".join(dict.fromkeys(blocks)) + b"\n")
    cert_dir = ca_dir = None
    if trust.cas or trust.client:
        cert_dir, ca_dir = os.path.join(base, "certs.d"), os.path.join(base, "cas")
        os.mkdir(cert_dir, 0o700)
        os.mkdir(ca_dir, 0o700)
        for i, path in enumerate(trust.cas):
            name = f"{i:02d}-{os.path.basename(path)}"
            for directory in (cert_dir, ca_dir):
                shutil.copyfile(path, os.path.join(directory, name))
        if trust.client:
            for source, name in zip(trust.client, ("client.cert", "client.key"), strict=True):
                with open(source, "rb") as f:
                    _write(os.path.join(cert_dir, name), f.read())
    return Materialised(bundle, cert_dir, ca_dir)


def _system_blocks(cert_file: str | None, cert_dirs: tuple[str, ...]) -> list[bytes]:
    """The CAs a Go program trusts with these SSL_CERT_FILE / SSL_CERT_DIR values; certifi's
    when the system has none (a minimal container)."""
    files = (cert_file,) if cert_file else GO_CERT_FILES
    blocks = next((b for f in files if (b := _blocks(f))), [])
    for directory in cert_dirs or GO_CERT_DIRS:
        try:
            names = sorted(os.listdir(directory))
        except OSError:
            continue
        for name in names:
            blocks += _blocks(os.path.join(directory, name))
    if not blocks:
        blocks = _blocks(certifi.where())
    return blocks


def _blocks(path: str) -> list[bytes]:
    try:
        with open(path, "rb") as f:
            return _PEM_CERT.findall(f.read(_FILE_MAX))
    except OSError:
        return []


def _write(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


@functools.cache
def _private_root() -> str:
    path = tempfile.mkdtemp(prefix="syncer-trust-")  # mode 0700
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path
