"""``syncer.tools.trust``: which CA files apply to a registry and the form each tool gets them in."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest
from cryptography import x509

from syncer.demo.registry import make_tls_material
from syncer.errors import UsageError
from syncer.tools.trust import CertDir, Trust, materialise, problems, resolve

HOST = "reg.example:5000"


@pytest.fixture(scope="module")
def tls(tmp_path_factory) -> tuple[Path, Path, Path]:
    return make_tls_material(tmp_path_factory.mktemp("tls"))


def certs_d(root: Path, host: str = HOST) -> Path:
    path = root / host
    path.mkdir(parents=True)
    return path


def test_ca_dir_first_then_each_certs_d_root_and_the_first_client_pair(tmp_path, tls):
    ca, cert, key = tls
    ca_dir = tmp_path / "mine"
    ca_dir.mkdir()
    shutil.copyfile(ca, ca_dir / "private.crt")
    shutil.copyfile(cert, ca_dir / "me.cert")
    shutil.copyfile(key, ca_dir / "me.key")
    containers = certs_d(tmp_path / "containers")
    shutil.copyfile(ca, containers / "ca.crt")
    docker = certs_d(tmp_path / "docker")
    shutil.copyfile(ca, docker / "other.crt")
    environ = {"SYNCER_CERTS_D": f"{tmp_path / 'containers'}:{tmp_path / 'docker'}"}

    trust = resolve(HOST, str(ca_dir), "target", environ)
    assert trust.cas == (str(ca_dir / "private.crt"), str(containers / "ca.crt"), str(docker / "other.crt"))
    assert trust.client == (str(ca_dir / "me.cert"), str(ca_dir / "me.key"))
    assert resolve("elsewhere:1", None, "target", environ) == Trust()


def test_a_cert_without_its_key_or_a_crt_that_does_not_parse_is_refused(tmp_path, tls):
    d = certs_d(tmp_path / "roots")
    shutil.copyfile(tls[1], d / "client.cert")
    (d / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")
    found = problems(CertDir(str(d), "the dir"))
    assert found == [
        (
            f"the dir: {d}/ca.crt holds no PEM certificate that parses; put the PEM certificate "
            "there (-----BEGIN CERTIFICATE-----), or remove the file"
        ),
        (
            f"the dir: client certificate {d}/client.cert has no key client.key beside it; add "
            "the key, or rename a CA file to .crt"
        ),
    ]
    with pytest.raises(UsageError, match="holds no PEM certificate"):
        resolve(HOST, None, "target", {"SYNCER_CERTS_D": str(tmp_path / "roots")})


def test_each_tool_gets_the_same_cas(tmp_path, tls):
    ca, cert, key = tls
    d = certs_d(tmp_path / "roots")
    shutil.copyfile(ca, d / "ca.crt")
    shutil.copyfile(cert, d / "client.cert")
    shutil.copyfile(key, d / "client.key")
    system = tmp_path / "system.pem"
    system.write_bytes(cert.read_bytes())  # stands for the system's bundle
    trust = resolve(
        HOST,
        None,
        "target",
        {
            "SYNCER_CERTS_D": str(tmp_path / "roots"),
            "SSL_CERT_FILE": str(system),
            "SSL_CERT_DIR": str(tmp_path / "empty"),
        },
    )
    made = materialise(trust)
    assert made is materialise(trust)  # once per process

    bundle = x509.load_pem_x509_certificates(Path(made.bundle).read_bytes())
    ours = x509.load_pem_x509_certificate(ca.read_bytes())
    assert bundle == [x509.load_pem_x509_certificate(cert.read_bytes()), ours]
    assert sorted(os.listdir(made.cert_dir)) == ["00-ca.crt", "client.cert", "client.key"]
    assert sorted(os.listdir(made.ca_dir)) == ["00-ca.crt"]  # Trivy reads every file as a CA
    assert stat.S_IMODE(os.stat(Path(made.cert_dir) / "client.key").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(made.cert_dir).st_mode) == 0o700


def test_ssl_cert_dir_is_read_like_go_reads_it(tmp_path, tls):
    ca = tls[0]
    directory = tmp_path / "dir"
    directory.mkdir()
    shutil.copyfile(ca, directory / "not-hashed-name.pem")  # Go reads every file, hashed or not
    trust = resolve(
        HOST,
        None,
        "target",
        {"SYNCER_CERTS_D": "", "SSL_CERT_DIR": str(directory), "SSL_CERT_FILE": str(tmp_path / "absent.pem")},
    )
    made = materialise(trust)
    assert made.cert_dir is None and made.ca_dir is None  # nothing beyond the system's
    assert x509.load_pem_x509_certificates(Path(made.bundle).read_bytes()) == [
        x509.load_pem_x509_certificate(ca.read_bytes())
    ]


def test_nothing_configured_leaves_each_tool_its_default():
    made = materialise(Trust())
    assert (made.bundle, made.cert_dir, made.ca_dir) == (None, None, None)
