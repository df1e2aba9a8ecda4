"""Registries configured the way skopeo, podman, docker and Go programs are, end to end through
the real CLI, real registries, real skopeo and real Trivy:

* credentials from each auth file of containers-auth.json(5)'s order and from credential
  helpers (a script on PATH), when settings.yaml has no ``auth`` block;
* a private CA given as ``ca_dir`` (any ``*.crt``), in certs.d directories, or with
  ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` alone;
* IPv6 literals, which skopeo cannot parse, refused by ``validate``.

The target registry is the one that needs the credential or the CA: it is reached by
syncer's HTTP client (signatures), skopeo (the copy) and Trivy (the scan), so a promoted
image means all three used it.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import requests

from syncer.core.model import State
from syncer.demo.registry import free_port, make_tls_material
from tests.harness.images import build_image, debian_files, write_layout
from tests.harness.trivydb import Advisory
from tests.harness.world import World

CLEAN = (("base-files", "12.4+deb12u8", "base-files"), ("libssl3", "3.0.15-1", "openssl"))
CRITICAL = Advisory(
    "CVE-2099-3001", "debian 12", "openssl", "CRITICAL", "3.0.15-1", title="openssl: planted critical"
)
USER = "robot"


def make_world(tmp_path: Path, registry_factory, trivy_db, **target) -> World:
    world = World(
        root=tmp_path, hub=registry_factory(), target=registry_factory(delete=True, **target), db=trivy_db
    )
    world.db.write((CRITICAL,))
    home = tmp_path / "home"
    home.mkdir()
    # Nothing of the machine's own logins or CAs: each test says where they are.
    world.env.update(
        HOME=str(home),
        XDG_RUNTIME_DIR=str(tmp_path / "run"),
        XDG_CONFIG_HOME="",
        DOCKER_CONFIG="",
        REGISTRY_AUTH_FILE="",
        SYNCER_CERTS_D=str(tmp_path / "no-certs.d"),
    )
    (tmp_path / "run").mkdir()
    return world


def settings(world: World, *target: str) -> None:
    """settings.yaml with the target reached by ``target`` lines (tls_verify, ca_dir …) and
    no auth block anywhere."""
    world.write_settings(target_extra="\n".join(target))


def nginx(world: World) -> str:
    digest = world.push("library/nginx:1.27.3", build_image(debian_files(CLEAN)))
    world.images("""
        images:
          - source: nginx
            tags: ["1.27.3"]
    """)
    return digest


def assert_promoted(world: World, digest: str, proc: subprocess.CompletedProcess) -> None:
    rec = world.record("nginx", "1.27.3")
    assert rec.state is State.PROMOTED, proc.stderr
    assert rec.digest == digest and rec.signatures == ["ci"]
    with world.target.session() as session:
        resp = session.head(
            f"{world.target.url}/v2/approved/nginx/manifests/1.27.3",
            headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
            timeout=10,
        )
    assert resp.headers.get("Docker-Content-Digest") == digest


def auth_entry(world: World) -> str:
    return base64.b64encode(f"{world.target.username}:{world.target.password}".encode()).decode()


def assert_secret_hidden(world: World, proc: subprocess.CompletedProcess) -> None:
    secret = world.target.password
    assert secret and secret not in proc.stdout + proc.stderr
    for path in world.reports.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


# --- credentials from auth files ---------------------------------------------------------------


def _write(path: Path, document: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document))
    path.chmod(0o600)
    return path


# Each way a login is stored, with the environment that points at it: (file relative to the
# test directory, its document for a target at HOST, more environment). The key forms are
# the ones the tools write: host:port, docker's URL form, the legacy top-level form.
AUTH_FILES = {
    "REGISTRY_AUTH_FILE": (
        "elsewhere/auth.json",
        lambda host, auth: {"auths": {host: {"auth": auth}}},
        {"REGISTRY_AUTH_FILE": "{root}/elsewhere/auth.json"},
    ),
    "XDG_RUNTIME_DIR": ("run/containers/auth.json", lambda host, auth: {"auths": {host: {"auth": auth}}}, {}),
    "XDG_CONFIG_HOME": (
        "config/containers/auth.json",
        lambda host, auth: {"auths": {host: {"auth": auth}}},
        {"XDG_CONFIG_HOME": "{root}/config"},
    ),
    "HOME/.config": (
        "home/.config/containers/auth.json",
        lambda host, auth: {"auths": {host: {"auth": auth}}},
        {},
    ),
    "DOCKER_CONFIG": (
        "dockercfg/config.json",
        lambda host, auth: {"auths": {f"https://{host}/v1/": {"auth": auth}}},
        {"DOCKER_CONFIG": "{root}/dockercfg"},
    ),
    "HOME/.docker": (
        "home/.docker/config.json",
        lambda host, auth: {"auths": {f"http://{host}": {"auth": auth}}},
        {},
    ),
    "HOME/.dockercfg": ("home/.dockercfg", lambda host, auth: {f"https://{host}/v1/": {"auth": auth}}, {}),
}


@pytest.mark.parametrize("where", sorted(AUTH_FILES))
def test_target_credentials_from_each_auth_file(tmp_path, registry_factory, trivy_db, where):
    world = make_world(
        tmp_path, registry_factory, trivy_db, htpasswd=(USER, f"pw-{secrets.token_urlsafe(12)}")
    )
    relpath, document, env = AUTH_FILES[where]
    path = _write(tmp_path / relpath, document(world.target.host, auth_entry(world)))
    world.env.update({k: v.format(root=tmp_path) for k, v in env.items()})
    settings(world, "tls_verify: false")
    digest = nginx(world)

    proc = world.run()
    assert_promoted(world, digest, proc)
    assert f"note: credentials for {world.target.host} from auth file {path}" in proc.stderr
    assert_secret_hidden(world, proc)


def test_an_earlier_auth_file_wins_and_registry_auth_file_stands_alone(tmp_path, registry_factory, trivy_db):
    world = make_world(
        tmp_path, registry_factory, trivy_db, htpasswd=(USER, f"pw-{secrets.token_urlsafe(12)}")
    )
    host = world.target.host
    wrong = base64.b64encode(f"{USER}:wrong-{secrets.token_hex(4)}".encode()).decode()
    runtime = _write(tmp_path / "run/containers/auth.json", {"auths": {host: {"auth": auth_entry(world)}}})
    _write(tmp_path / "home/.docker/config.json", {"auths": {host: {"auth": wrong}}})
    settings(world, "tls_verify: false")
    digest = nginx(world)
    proc = world.run()
    assert_promoted(world, digest, proc)
    assert f"from auth file {runtime}" in proc.stderr

    # REGISTRY_AUTH_FILE replaces the list, as for skopeo: its wrong entry is the one used.
    alone = _write(tmp_path / "alone.json", {"auths": {host: {"auth": wrong}}})
    world.env["REGISTRY_AUTH_FILE"] = str(alone)
    world.push("library/nginx:1.27.4", build_image(debian_files(CLEAN, point_release="12.9")))
    world.images("""
        images:
          - source: nginx
            tags: ["1.27.4"]
    """)
    refused = world.run(expect=1)
    out = refused.stdout + refused.stderr
    assert f"auth file {alone} (entry '{host}')" in out, out
    assert "Traceback" not in out


HELPER = """\
#!{python}
# docker-credential-helpers protocol: the server on stdin, JSON out, "not found" on stdout.
import json, sys
server = sys.stdin.read().strip()
with open({log!r}, "a") as log:
    log.write(server + "\\n")
store = json.load(open({store!r}))
if server not in store:
    print("credentials not found in native keychain")
    sys.exit(1)
print(json.dumps({{"ServerURL": server, "Username": store[server][0], "Secret": store[server][1]}}))
"""


def install_helper(tmp_path: Path, world: World, name: str, store: dict) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    log = tmp_path / f"{name}.log"
    store_file = _write(tmp_path / f"{name}.store.json", store)
    helper = bin_dir / f"docker-credential-{name}"
    helper.write_text(HELPER.format(python=sys.executable, log=str(log), store=str(store_file)))
    helper.chmod(0o755)
    world.env["PATH"] = f"{bin_dir}:{os.environ['PATH']}"
    return log


@pytest.mark.parametrize("config", ["credHelpers", "credsStore"])
def test_target_credentials_from_a_credential_helper(tmp_path, registry_factory, trivy_db, config):
    world = make_world(
        tmp_path, registry_factory, trivy_db, htpasswd=(USER, f"pw-{secrets.token_urlsafe(12)}")
    )
    host = world.target.host
    log = install_helper(tmp_path, world, "vault", {host: [world.target.username, world.target.password]})
    document: dict = (
        {"credHelpers": {host: "vault"}}
        if config == "credHelpers"
        else {"credsStore": "vault", "auths": {host: {}}}
    )
    config_file = _write(tmp_path / "home/.docker/config.json", document)
    settings(world, "tls_verify: false")
    digest = nginx(world)

    proc = world.run()
    assert_promoted(world, digest, proc)
    assert host in log.read_text().splitlines()
    assert f"from credential helper docker-credential-vault ({config}" in proc.stderr
    assert str(config_file) in proc.stderr
    assert_secret_hidden(world, proc)


def test_broken_auth_file_and_missing_helper_are_named_with_the_remedy(tmp_path, registry_factory, trivy_db):
    world = make_world(tmp_path, registry_factory, trivy_db)
    settings(world, "tls_verify: false")
    nginx(world)
    broken = tmp_path / "home/.docker/config.json"
    broken.parent.mkdir(parents=True)
    broken.write_text('{"auths": {')
    # Like a credential variable that is not set: the entries of that registry fail, with
    # the file named, and the others go on.
    proc = world.syncer("plan")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert f"auth file {broken} is not valid JSON at line 1; fix it or remove it" in out
    assert "Traceback" not in out

    _write(broken, {"credHelpers": {world.hub.host: "nowhere"}})
    proc = world.syncer("plan")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert (
        f"credential helper docker-credential-nowhere (credHelpers entry '{world.hub.host}' in "
        f"{broken}) is not on PATH; install it"
    ) in out


# --- one CA configuration ----------------------------------------------------------------------


# How the target's CA is given: lines under target, environment, files to place.
def _ca_dir(tmp_path: Path, world: World) -> tuple[list[str], dict[str, str]]:
    directory = tmp_path / "certs" / "target"
    directory.mkdir(parents=True)
    shutil.copyfile(world.target.ca_file, directory / "private-root.crt")  # any *.crt, not ca.crt
    return [f"ca_dir: {directory}"], {}


def _containers_certs_d(tmp_path: Path, world: World) -> tuple[list[str], dict[str, str]]:
    root = tmp_path / "containers-certs.d"
    (root / world.target.host).mkdir(parents=True)
    shutil.copyfile(world.target.ca_file, root / world.target.host / "ca.crt")
    return [], {"SYNCER_CERTS_D": f"{root}:{tmp_path / 'docker-certs.d'}"}


def _docker_certs_d(tmp_path: Path, world: World) -> tuple[list[str], dict[str, str]]:
    root = tmp_path / "docker-certs.d"
    (root / world.target.host).mkdir(parents=True)
    shutil.copyfile(world.target.ca_file, root / world.target.host / "registry.crt")
    return [], {"SYNCER_CERTS_D": f"{tmp_path / 'containers-certs.d'}:{root}"}


def _ssl_cert_file(tmp_path: Path, world: World) -> tuple[list[str], dict[str, str]]:
    # Go reads the system directories beside SSL_CERT_FILE; syncer's client does the same.
    bundle = tmp_path / "cas.pem"
    shutil.copyfile(world.target.ca_file, bundle)
    return [], {"SSL_CERT_FILE": str(bundle), "SSL_CERT_DIR": ""}


def _ssl_cert_dir(tmp_path: Path, world: World) -> tuple[list[str], dict[str, str]]:
    directory = tmp_path / "ssl-certs"
    directory.mkdir()
    shutil.copyfile(world.target.ca_file, directory / "test-ca.pem")
    return [], {"SSL_CERT_DIR": str(directory), "SSL_CERT_FILE": ""}


CA_WAYS = {
    "ca_dir": _ca_dir,
    "containers certs.d": _containers_certs_d,
    "docker certs.d": _docker_certs_d,
    "SSL_CERT_FILE": _ssl_cert_file,
    "SSL_CERT_DIR": _ssl_cert_dir,
}


@pytest.mark.parametrize("way", sorted(CA_WAYS))
def test_tls_target_trusted_the_same_way_by_discovery_skopeo_and_trivy(
    tmp_path, registry_factory, trivy_db, way
):
    world = make_world(tmp_path, registry_factory, trivy_db, tls=True)
    lines, env = CA_WAYS[way](tmp_path, world)
    # requests' own variables are not the way: each way must work alone.
    world.env.update(REQUESTS_CA_BUNDLE="", CURL_CA_BUNDLE="", **env)
    settings(world, "tls_verify: true", *lines)
    digest = nginx(world)

    proc = world.run()
    assert_promoted(world, digest, proc)
    assert world.record("nginx", "1.27.3").scan is not None


@pytest.mark.parametrize("way", ["ca_dir", "certs.d"])
def test_a_client_certificate_reaches_discovery_and_skopeo(tmp_path, registry_factory, trivy_db, way):
    """Hub's stand-in requires a client certificate: discovery (syncer's client) and the copy
    (skopeo) must both show it. Trivy scans the target, which does not ask for one."""
    world = make_world(tmp_path, registry_factory, trivy_db)
    world.hub = registry_factory(tls=True, client_auth=True)
    directory = tmp_path / "hub-certs" / world.hub.host
    shutil.copytree(world.hub.cert_dir, directory)  # ca.crt, client.cert, client.key
    source = ["tls_verify: true"]
    if way == "ca_dir":
        source.append(f"ca_dir: {directory}")
    else:
        world.env["SYNCER_CERTS_D"] = str(directory.parent)
    world.write(
        "settings.yaml",
        f"""\
target:
  registry: {world.target.host}
  tls_verify: false
sources:
  docker.io:
    endpoint: {world.hub.host}
"""
        + "".join(f"    {line}\n" for line in source)
        + """\
signing:
  signer: ci
content_admins: ["@acme/security"]
""",
    )
    digest = nginx(world)
    proc = world.run()
    rec = world.record("nginx", "1.27.3")
    assert rec.state is State.PROMOTED and rec.digest == digest, proc.stderr

    # Without the pair the registry refuses the handshake, at discovery already.
    (directory / "client.cert").unlink()
    (directory / "client.key").unlink()
    proc = world.syncer("plan")
    assert proc.returncode == 1 and "Traceback" not in proc.stdout + proc.stderr


def test_tls_target_trusted_through_the_real_etc_containers_certs_d(tmp_path, registry_factory, trivy_db):
    world = make_world(tmp_path, registry_factory, trivy_db, tls=True)
    del world.env["SYNCER_CERTS_D"]
    world.env.update(REQUESTS_CA_BUNDLE="", CURL_CA_BUNDLE="")
    directory = Path("/etc/containers/certs.d") / world.target.host
    try:
        directory.mkdir(parents=True)
    except PermissionError:
        pytest.skip("needs to write /etc/containers/certs.d")
    try:
        shutil.copyfile(world.target.ca_file, directory / "ca.crt")
        settings(world, "tls_verify: true")
        digest = nginx(world)
        assert_promoted(world, digest, world.run())
    finally:
        shutil.rmtree(directory)


def test_without_the_ca_the_tls_target_is_refused(tmp_path, registry_factory, trivy_db):
    world = make_world(tmp_path, registry_factory, trivy_db, tls=True)
    world.env.update(REQUESTS_CA_BUNDLE="", CURL_CA_BUNDLE="")
    settings(world, "tls_verify: true")
    nginx(world)
    proc = world.run(expect=1)
    assert world.record("nginx", "1.27.3").state is not State.PROMOTED
    assert "Traceback" not in proc.stderr


def validate(world: World, **env: str) -> subprocess.CompletedProcess:
    world.env.update(env)
    return world.syncer("validate")


def test_validate_checks_that_every_ca_file_parses(tmp_path, registry_factory, trivy_db):
    world = make_world(tmp_path, registry_factory, trivy_db)
    good = tmp_path / "certs" / "good"
    good.mkdir(parents=True)
    shutil.copyfile(make_tls_material(tmp_path / "some-ca")[0], good / "ca.crt")
    broken = tmp_path / "certs" / "broken"
    broken.mkdir()
    (broken / "ca.crt").write_text("not a certificate\n")
    (broken / "client.cert").write_bytes((good / "ca.crt").read_bytes())
    settings(world, "tls_verify: true", f"ca_dir: {good}")
    nginx(world)
    # The system's bundle (SSL_CERT_FILE here, if the machine sets it) holds roots that
    # cryptography warns about; they parse, and validate's output stays its own.
    system = os.environ.get("SSL_CERT_FILE") or "/etc/ssl/certs/ca-certificates.crt"
    proc = validate(world, SSL_CERT_FILE=system if os.path.exists(system) else "")
    assert proc.returncode == 0 and "Warning" not in proc.stderr, proc.stderr

    settings(world, "tls_verify: true", f"ca_dir: {broken}")
    proc = validate(world)
    assert proc.returncode == 2
    assert (
        f"catalog/settings.yaml:6: error: ca_dir of target: {broken}/ca.crt holds no PEM "
        "certificate that parses; put the PEM certificate there"
    ) in proc.stdout, proc.stdout
    assert f"client certificate {broken}/client.cert has no key client.key beside it" in proc.stdout

    settings(world, "tls_verify: true", f"ca_dir: {tmp_path / 'absent'}")
    proc = validate(world)
    assert proc.returncode == 2 and f"{tmp_path / 'absent'} is not a directory" in proc.stdout

    # A certs.d directory of the target's host is checked too, at the registry's line.
    root = tmp_path / "certs.d"
    (root / world.target.host).mkdir(parents=True)
    (root / world.target.host / "ca.crt").write_text("garbage")
    settings(world, "tls_verify: true")
    proc = validate(world, SYNCER_CERTS_D=str(root))
    assert proc.returncode == 2
    assert (
        f"catalog/settings.yaml:2: error: {root / world.target.host}: "
        f"{root / world.target.host}/ca.crt holds no PEM certificate"
    ) in proc.stdout

    proc = validate(world, SYNCER_CERTS_D="", SSL_CERT_FILE=str(broken / "ca.crt"))
    assert proc.returncode == 2
    assert f"SSL_CERT_FILE {broken}/ca.crt holds no PEM certificate" in proc.stdout


# --- IPv6 literals -----------------------------------------------------------------------------


def test_ipv6_literals_are_refused_by_validate_with_the_reason(tmp_path, registry_factory, trivy_db):
    world = make_world(tmp_path, registry_factory, trivy_db)
    nginx(world)
    world.write(
        "settings.yaml",
        """\
target:
  registry: "[::1]:5000"
sources:
  "[fd00::1]:5000": {}
  docker.io:
    endpoint: "[::1]:5001"
signing:
  signer: ci
content_admins: ["@acme/security"]
""",
    )
    world.images(
        """
        images:
          - source: "[::1]:5002/team/tool"
            tags: ["1.0"]
    """,
        file="images/v6.yaml",
    )
    proc = validate(world)
    assert proc.returncode == 2
    reason = (
        "is an IPv6 literal, which syncer refuses: skopeo 1.9's reference parser "
        "(containers/image docker/reference) rejects bracketed hosts"
    )
    for where, what in (
        ("catalog/settings.yaml:2", "'registry' '[::1]:5000'"),
        ("catalog/settings.yaml:4", "'[fd00::1]:5000' under sources"),
        ("catalog/settings.yaml:6", "'endpoint' '[::1]:5001'"),
        ("catalog/images/v6.yaml:2", "source '[::1]:5002/team/tool'"),
    ):
        assert f"{where}: error: {what} {reason}" in proc.stdout, proc.stdout
    assert "host name that resolves to the address" in proc.stdout


def test_the_reason_for_refusing_ipv6_holds_skopeo_cannot_reach_a_registry_on_ipv6(tmp_path):
    """A registry listens on [::1] here; skopeo refuses the reference. When this fails because
    skopeo copies, lift the refusal in syncer/catalog.py (_ipv6_refused) and test end to end."""
    if (
        not Path("/proc/net/if_inet6").exists()
        or "00000000000000000000000000000001" not in Path("/proc/net/if_inet6").read_text()
    ):
        pytest.skip("no IPv6 loopback")
    port = free_port()
    config = tmp_path / "config.yml"
    config.write_text(
        json.dumps(
            {
                "version": 0.1,
                "http": {"addr": f"[::1]:{port}"},
                "storage": {"filesystem": {"rootdirectory": str(tmp_path / "s")}},
            }
        )
    )
    registry = subprocess.Popen(
        ["docker-registry", "serve", str(config)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                assert requests.get(f"http://[::1]:{port}/v2/", timeout=1).status_code == 200
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "docker-registry did not listen on [::1]"
                time.sleep(0.05)
        layout = write_layout(build_image(debian_files(CLEAN)), tmp_path / "layout", "v1")
        policy = tmp_path / "policy.json"
        policy.write_text('{"default": [{"type": "insecureAcceptAnything"}]}')
        done = subprocess.run(
            [
                "skopeo",
                "--policy",
                str(policy),
                "copy",
                "--dest-tls-verify=false",
                f"oci:{layout}:v1",
                f"docker://[::1]:{port}/team/tool:1.0",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode != 0, textwrap.dedent("""\
            skopeo now copies to an IPv6 literal: lift the refusal (syncer/catalog.py
            _ipv6_refused) and test syncer end to end on [::1]""")
        assert "invalid reference format" in done.stderr, done.stderr
    finally:
        registry.terminate()
        registry.wait(timeout=10)
