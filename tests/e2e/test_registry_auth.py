"""Credentials and authentication of ``syncer.tools.registry`` against real registries.

Basic auth runs against distribution with htpasswd. The Bearer flow runs against
distribution in ``auth: token`` mode, trusting a CA made here; a small token server in this
file issues ES256 JWTs whose ``x5c`` header chains to that CA, as Docker Hub's does.
"""

from __future__ import annotations

import base64
import datetime
import json
import logging
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from syncer.core.model import Auth
from syncer.errors import NotFoundError, RegistryAuthError, RegistryError, UsageError
from syncer.tools import registry as registry_module
from syncer.tools.registry import Credentials, RegistryClient, credentials_from_env, digest_of
from tests.harness.registry import Registry

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
ISSUER = "syncer-test-issuer"
SERVICE = "syncer-test-registry"


def minimal_manifest(client: RegistryClient, repository: str) -> bytes:
    config = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
    digest = client.put_blob(repository, config)
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": digest,
                "size": len(config),
            },
            "layers": [],
        }
    ).encode()


def assert_secret_hidden(err: BaseException, secret: str) -> None:
    for text in (str(err), repr(err), *map(str, err.args)):
        assert secret not in text


# --- credentials from the environment --------------------------------------------------------


def test_credentials_from_env_reads_named_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUB_USERNAME", "alice")
    monkeypatch.setenv("HUB_TOKEN", "s3cret-token")
    creds = credentials_from_env(Auth("HUB_USERNAME", "HUB_TOKEN"), "sources.docker.io.auth")
    assert creds is not None
    assert (creds.username, creds.password) == ("alice", "s3cret-token")
    assert "HUB_USERNAME/HUB_TOKEN" in creds.origin and "sources.docker.io.auth" in creds.origin
    for text in (repr(creds), str(creds), f"{creds}", repr([creds])):
        assert "s3cret-token" not in text
        assert "alice" in text


def test_credentials_from_env_empty_variable_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EU_USERNAME", "")
    monkeypatch.setenv("EU_PASSWORD", "x")
    expected = r"EU_USERNAME \(replicas\[0\].auth.username_env\) is empty"
    with pytest.raises(UsageError, match=expected):
        credentials_from_env(Auth("EU_USERNAME", "EU_PASSWORD"), "replicas[0].auth")


def test_credentials_from_env_none_without_auth_block() -> None:
    assert credentials_from_env(Auth(), "target.auth") is None


def test_credentials_from_env_unset_variable_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HUB_USERNAME", "alice")
    monkeypatch.delenv("HUB_TOKEN", raising=False)
    with pytest.raises(UsageError) as info:
        credentials_from_env(Auth("HUB_USERNAME", "HUB_TOKEN"), "sources.docker.io.auth")
    assert str(info.value) == (
        "environment variable HUB_TOKEN (sources.docker.io.auth.password_env) is not set; "
        "export it or remove the auth block"
    )


# --- basic auth ------------------------------------------------------------------------------


def test_basic_auth_with_right_credentials(auth_registry: Registry, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    creds = Credentials(auth_registry.username, auth_registry.password, "T_USER/T_PASS (target.auth)")
    with RegistryClient(auth_registry.host, tls_verify=False, credentials=creds) as client:
        raw = minimal_manifest(client, "team/app")
        assert client.put_manifest("team/app", "v1", raw, OCI_MANIFEST) == digest_of(raw)
        assert client.head_manifest("team/app", "v1").digest == digest_of(raw)
        assert client.list_tags("team/app").tags == ["v1"]
        assert auth_registry.password not in repr(client)
    assert "/v2/team/app/manifests/v1" in caplog.text  # the debug log is on, yet…
    assert auth_registry.password not in caplog.text
    assert base64.b64encode(f"syncer:{auth_registry.password}".encode()).decode() not in caplog.text
    # Only the first request went without credentials: Basic is sent up front once known.
    assert [r.status for r in auth_registry.requests()].count(401) == 1


def test_basic_auth_wrong_password_names_registry_and_variables(auth_registry: Registry) -> None:
    wrong = f"wrong-{secrets.token_hex(8)}"
    creds = Credentials(auth_registry.username, wrong, "T_USER/T_PASS (target.auth)")
    with RegistryClient(auth_registry.host, tls_verify=False, credentials=creds) as client:
        with pytest.raises(RegistryAuthError) as info:
            client.head_manifest("team/app", "v1")
    err = info.value
    assert auth_registry.host in str(err)
    assert "T_USER/T_PASS (target.auth)" in str(err)
    assert err.registry == auth_registry.host
    assert_secret_hidden(err, wrong)
    assert_secret_hidden(err, base64.b64encode(f"syncer:{wrong}".encode()).decode())


def test_basic_auth_without_credentials_says_to_configure_them(auth_registry: Registry) -> None:
    with RegistryClient(auth_registry.host, tls_verify=False) as client:
        with pytest.raises(RegistryAuthError, match="no credentials are configured"):
            client.list_tags("team/app")


# --- bearer tokens ---------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(issuer_key, hashes.SHA256())
    )


class TokenServer:
    """Issues registry JWTs like Docker Hub's auth service, for one user.

    The token's ``x5c`` header carries a leaf certificate signed by ``ca_pem``, the bundle the
    registry trusts. Every access asked for in ``scope`` is granted.
    """

    def __init__(
        self,
        username: str,
        password: str,
        *,
        expires_in: int = 300,
        anonymous_pull: bool = False,
        unavailable: int = 0,
        max_scopes: int | None = None,
        first_scope_only: bool = False,
        token_suffix: str = "",
    ):
        self.username, self.password, self.expires_in = username, password, expires_in
        self.max_scopes = max_scopes  # more scopes in one request are answered 400
        self.first_scope_only = first_scope_only  # grants the first scope asked for, no other
        self.token_suffix = token_suffix  # appended to every token: a broken token service
        self.unavailable = unavailable  # answer this many requests with 503 first
        self.anonymous_pull = anonymous_pull  # Docker Hub: public repositories need no login
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "token CA")])
        self.ca_pem = _cert("token CA", ca_key, ca_name, ca_key, ca=True).public_bytes(
            serialization.Encoding.PEM
        )
        self._key = ec.generate_private_key(ec.SECP256R1())
        leaf = _cert("token signer", self._key, ca_name, ca_key, ca=False)
        self._x5c = [base64.b64encode(leaf.public_bytes(serialization.Encoding.DER)).decode()]
        self.requests: list[dict[str, list[str]]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/token"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def token(self, subject: str, scopes: list[str], service: str) -> str:
        now = int(time.time())
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        header = {"typ": "JWT", "alg": "ES256", "x5c": self._x5c}
        claims = {
            "iss": ISSUER,
            "sub": subject,
            "aud": service,
            "exp": now + self.expires_in,
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        signing_input = ".".join(_b64url(json.dumps(part).encode()) for part in (header, claims))
        der = self._key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)  # JWS wants the raw r || s, not DER
        return f"{signing_input}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

            def do_GET(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                server.requests.append(query)
                if server.unavailable > 0:
                    server.unavailable -= 1
                    self._answer(503, {"details": "try again"})
                    return
                expected = (
                    "Basic " + base64.b64encode(f"{server.username}:{server.password}".encode()).decode()
                )
                given = self.headers.get("Authorization")
                scopes = query.get("scope", [])
                if given is None and server.anonymous_pull:
                    subject = ""
                    scopes = [s for s in scopes if s.endswith(":pull")]
                elif given == expected:
                    subject = server.username
                else:
                    self._answer(401, {"details": "incorrect username or password"})
                    return
                if server.max_scopes is not None and len(scopes) > server.max_scopes:
                    self._answer(400, {"details": "too many scopes"})
                    return
                if server.first_scope_only:
                    scopes = scopes[:1]
                token = server.token(subject, scopes, query.get("service", [""])[0])
                self._answer(200, {"token": token + server.token_suffix, "expires_in": server.expires_in})

            def _answer(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler


class TokenRegistry(Registry):
    """The harness's registry with ``auth: token`` trusting ``issuer``'s CA."""

    def __init__(self, workdir: Path, issuer: TokenServer):
        self._bundle = Path(workdir) / "token-ca.pem"
        Path(workdir).mkdir(parents=True, exist_ok=True)
        self._bundle.write_bytes(issuer.ca_pem)
        self._realm = issuer.realm
        super().__init__(workdir, delete=True)

    def _write_config(self) -> None:
        super()._write_config()
        config = json.loads(self.config_file.read_text())
        config["auth"] = {
            "token": {
                "realm": self._realm,
                "service": SERVICE,
                "issuer": ISSUER,
                "rootcertbundle": str(self._bundle),
            }
        }
        self.config_file.write_text(json.dumps(config, indent=2))


@pytest.fixture
def token_setup(tmp_path: Path, request: pytest.FixtureRequest):
    options = getattr(request, "param", {})
    issuer = TokenServer("robot", f"pw-{secrets.token_urlsafe(12)}", **options)
    registry = None
    try:
        registry = TokenRegistry(tmp_path / "registry", issuer)
        yield issuer, registry
    finally:
        if registry is not None:
            registry.stop()
        issuer.stop()


def test_bearer_token_flow_against_token_mode_registry(token_setup) -> None:
    issuer, registry = token_setup
    creds = Credentials(issuer.username, issuer.password, "R_USER/R_TOKEN (sources.x.auth)")
    with RegistryClient(registry.host, tls_verify=False, credentials=creds) as client:
        raw = minimal_manifest(client, "team/app")
        digest = client.put_manifest("team/app", "v1", raw, OCI_MANIFEST)
        assert client.head_manifest("team/app", "v1").digest == digest == digest_of(raw)
        assert client.head_manifest("team/app", "v1").digest == digest
        assert client.list_tags("team/app").tags == ["v1"]
    # The registry's own challenge named the service and scope we asked the issuer for.
    assert all(q["service"] == [SERVICE] for q in issuer.requests)
    scopes = [q["scope"][0] for q in issuer.requests]
    assert "repository:team/app:pull,push" in scopes
    # Tokens are cached per scope: one fetch for push+pull, one for pull, not one per request.
    assert len(scopes) == len(set(scopes)) == 2
    assert client.stats["GET token"] == 2
    # Once the realm is known, a token goes out with the first request of a new scope.
    assert [r.status for r in registry.requests()].count(401) == 1


def test_bearer_delete_uses_the_scope_the_registry_asks_for(token_setup) -> None:
    issuer, registry = token_setup
    creds = Credentials(issuer.username, issuer.password)
    with RegistryClient(registry.host, tls_verify=False, credentials=creds) as client:
        digest = client.put_manifest("team/app", "v1", minimal_manifest(client, "team/app"), OCI_MANIFEST)
        client.delete_manifest("team/app", digest)
        with pytest.raises(NotFoundError):
            client.head_manifest("team/app", digest)
    assert "repository:team/app:delete" in [q["scope"][0] for q in issuer.requests]


def test_bearer_mount_asks_for_both_repositories_in_one_token(token_setup) -> None:
    issuer, registry = token_setup
    creds = Credentials(issuer.username, issuer.password)
    with RegistryClient(registry.host, tls_verify=False, credentials=creds) as client:
        raw = minimal_manifest(client, "quarantine/app")
        config = json.loads(raw)["config"]["digest"]
        assert client.mount_blob("approved/app", config, "quarantine/app") is True
        assert client.blob_exists("approved/app", config)
    # Repeated scope parameters, as the token specification has several scopes.
    assert ["repository:approved/app:pull,push", "repository:quarantine/app:pull"] in [
        q["scope"] for q in issuer.requests
    ]


@pytest.mark.parametrize("token_setup", [{"anonymous_pull": True}], indirect=True)
def test_bearer_anonymous_pull_token_like_docker_hub(token_setup) -> None:
    issuer, registry = token_setup
    creds = Credentials(issuer.username, issuer.password)
    with RegistryClient(registry.host, tls_verify=False, credentials=creds) as pusher:
        digest = pusher.put_manifest(
            "library/app", "1.0", minimal_manifest(pusher, "library/app"), OCI_MANIFEST
        )
    fetched = len(issuer.requests)
    with RegistryClient(registry.host, tls_verify=False) as anonymous:
        assert anonymous.head_manifest("library/app", "1.0").digest == digest
        assert anonymous.stats["GET token"] == 1 and anonymous.stats["GET manifest"] == 0
        with pytest.raises(RegistryAuthError, match="no credentials are configured"):
            anonymous.put_blob("library/app", b"not allowed")
    assert issuer.requests[fetched]["scope"] == ["repository:library/app:pull"]


@pytest.mark.parametrize("token_setup", [{"unavailable": 2}], indirect=True)
def test_bearer_token_server_outage_is_retried(token_setup) -> None:
    issuer, registry = token_setup
    sleeps: list[float] = []
    creds = Credentials(issuer.username, issuer.password)
    with RegistryClient(registry.host, tls_verify=False, credentials=creds, sleep=sleeps.append) as client:
        assert client.blob_exists("team/app", digest_of(b"nothing")) is False
    assert len(issuer.requests) == 3 and len(sleeps) == 2


@pytest.mark.parametrize("token_setup", [{"expires_in": 10}], indirect=True)
def test_bearer_token_refetched_when_expired(token_setup) -> None:
    issuer, registry = token_setup
    creds = Credentials(issuer.username, issuer.password)
    with RegistryClient(registry.host, tls_verify=False, credentials=creds) as client:
        for _ in range(3):
            assert client.blob_exists("team/app", digest_of(b"nothing")) is False
    # expires_in 10 is inside the refresh margin: every request needs a fresh token.
    assert len(issuer.requests) == 3


def test_bearer_wrong_password_is_an_auth_error_without_the_password(token_setup) -> None:
    issuer, registry = token_setup
    wrong = f"wrong-{secrets.token_hex(8)}"
    creds = Credentials(issuer.username, wrong, "R_USER/R_TOKEN (sources.x.auth)")
    with RegistryClient(registry.host, tls_verify=False, credentials=creds) as client:
        with pytest.raises(RegistryAuthError) as info:
            client.head_manifest("team/app", "v1")
    assert "token server" in str(info.value) and registry.host in str(info.value)
    assert "R_USER/R_TOKEN (sources.x.auth)" in str(info.value)
    assert_secret_hidden(info.value, wrong)


# --- tokens for many repositories at once (discovery) ----------------------------------------


def push_repositories(issuer: TokenServer, registry: Registry, count: int) -> dict[str, str]:
    """``library/app-N:1.0`` for N below ``count``; repository -> digest."""
    creds = Credentials(issuer.username, issuer.password)
    with RegistryClient(registry.host, tls_verify=False, credentials=creds) as pusher:
        return {
            repo: pusher.put_manifest(repo, "1.0", minimal_manifest(pusher, repo), OCI_MANIFEST)
            for repo in (f"library/app-{i}" for i in range(count))
        }


def pull_scopes_asked(issuer: TokenServer, since: int) -> list[list[str]]:
    return [q["scope"] for q in issuer.requests[since:]]


def discover(token_setup, count: int, threads: int = 1) -> tuple[list[list[str]], int]:
    """``count`` repositories HEADed by ``threads``, announced first as discovery does: the
    scopes of each token request, and the 401s the registry answered meanwhile."""
    issuer, registry = token_setup
    digests = push_repositories(issuer, registry, count)
    since, refused = len(issuer.requests), [r.status for r in registry.requests()].count(401)
    creds = Credentials(issuer.username, issuer.password)
    with RegistryClient(registry.host, tls_verify=False, credentials=creds) as client:
        client.expect_pulls(digests)
        with ThreadPoolExecutor(threads) as pool:
            found = list(pool.map(lambda repo: client.head_manifest(repo, "1.0").digest, digests))
    assert found == list(digests.values())
    return (pull_scopes_asked(issuer, since), [r.status for r in registry.requests()].count(401) - refused)


def test_discovery_asks_for_ten_repositories_tokens_at_a_time(token_setup) -> None:
    asked, refused = discover(token_setup, 25, threads=8)
    assert [len(scopes) for scopes in asked] == [10, 10, 5]
    assert sorted(s for scopes in asked for s in scopes) == sorted(
        f"repository:library/app-{i}:pull" for i in range(25)
    )
    # Only the first request of each thread, before the realm was known, met a 401.
    assert refused <= 8


@pytest.mark.parametrize("token_setup", [{"max_scopes": 1}], indirect=True)
def test_a_token_service_refusing_several_scopes_is_asked_per_repository(token_setup) -> None:
    asked, _ = discover(token_setup, 5)
    assert [len(scopes) for scopes in asked] == [5, 1, 1, 1, 1, 1]


@pytest.mark.parametrize("token_setup", [{"first_scope_only": True}], indirect=True)
def test_a_token_covering_only_the_first_repository_stops_the_batching(token_setup) -> None:
    asked, refused = discover(token_setup, 5)
    assert [len(scopes) for scopes in asked] == [5, 1, 1, 1, 1]
    # Its access claim said so: the token was never sent for the repositories it lacks.
    assert refused == 1


@pytest.mark.parametrize("token_setup", [{"first_scope_only": True}], indirect=True)
def test_a_batched_token_the_registry_refuses_is_replaced_by_the_repositorys_own(
    token_setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An opaque token cannot be read: the registry's 401 is what says it does not cover."""
    monkeypatch.setattr(registry_module, "token_grants", lambda token, scope: True)
    asked, refused = discover(token_setup, 5)
    assert [len(scopes) for scopes in asked] == [5, 1, 1, 1, 1]
    # The first contact, then the refused batched token; the others were dropped with it.
    assert refused == 2


@pytest.mark.parametrize("token_setup", [{"token_suffix": "\r\nX-Injected: 1"}], indirect=True)
def test_a_token_with_a_line_break_is_refused_without_showing_it(token_setup) -> None:
    issuer, registry = token_setup
    creds = Credentials(issuer.username, issuer.password)
    with RegistryClient(registry.host, tls_verify=False, credentials=creds) as client:
        with pytest.raises(RegistryError, match="not printable ASCII") as info:
            client.head_manifest("team/app", "v1")
    assert "X-Injected" not in str(info.value) and "eyJ" not in str(info.value)
