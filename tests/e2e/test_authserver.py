"""``syncer auth-server`` and ``syncer access-config`` against a real distribution registry in
token mode, real skopeo and real ``htpasswd -B`` files; plus the token service's own parts."""

from __future__ import annotations

import base64
import io
import json
import stat
import statistics
import subprocess
import time
from contextlib import redirect_stderr, redirect_stdout
from datetime import UTC, datetime, timedelta
from pathlib import Path

import bcrypt
import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from syncer import cli
from syncer.access.authserver import (
    MIN_BCRYPT_COST,
    Accounts,
    LoginThrottle,
    Scope,
    ThrottleSettings,
    TokenService,
    issue_token,
    load_signer,
    parse_htpasswd,
    parse_scopes,
    robots_from_env,
)
from syncer.demo.tokenauth import AuthServer, Robot
from syncer.errors import RegistryAuthError, UsageError
from syncer.tools.registry import OCI_MANIFEST
from tests.harness.images import build_image, write_layout
from tests.harness.tokenregistry import SERVICE, SPEC_ACCESS, TokenWorld, write_users

RELOAD_TIMEOUT = 5.0


@pytest.fixture
def layout(tmp_path: Path) -> str:
    """An OCI layout holding one small image, as an ``oci:`` reference for skopeo."""
    image = build_image({"etc/motd": "approved content\n"})
    return f"oci:{write_layout(image, tmp_path / 'layout', 'v1')}:v1"


def seed(world: TokenWorld, layout: str, *repositories: str) -> None:
    """The pipeline pushes the image to ``REPO:v1`` for each repository."""
    for repository in repositories:
        result = world.skopeo_copy(layout, f"docker://{repository}:v1", dest_user="syncer")
        assert result.returncode == 0, result.stderr


def refused(result: subprocess.CompletedProcess[str]) -> bool:
    text = result.stderr.lower()
    return result.returncode != 0 and any(
        word in text for word in ("unauthorized", "denied", "authentication required")
    )


# --- the roles of SPEC.md's access.yaml, through skopeo ----------------------------------------


def test_developer_pulls_approved_only_and_pushes_nowhere(
    token_world: TokenWorld, layout: str, tmp_path: Path
) -> None:
    seed(token_world, layout, "quarantine/app", "approved/app")
    pulled = token_world.skopeo_copy(
        "docker://approved/app:v1", f"oci:{tmp_path / 'got'}:v1", src_user="dev1"
    )
    assert pulled.returncode == 0, pulled.stderr
    assert refused(
        token_world.skopeo_copy("docker://quarantine/app:v1", f"oci:{tmp_path / 'no'}:v1", src_user="dev1")
    )
    for repository in ("approved/app", "quarantine/app", "dev1/own"):
        assert refused(token_world.skopeo_copy(layout, f"docker://{repository}:v2", dest_user="dev1"))
    events = token_world.auth.events()
    assert {
        "event": "deny",
        "user": "dev1",
        "scope": "repository:quarantine/app:pull",
        "granted": "-",
        "client": "127.0.0.1",
    }.items() <= next(
        e for e in events if e.get("scope") == "repository:quarantine/app:pull" and e["user"] == "dev1"
    ).items()
    assert any(
        e["event"] == "grant"
        and e["user"] == "dev1"
        and e["scope"] == "repository:approved/app:pull,push"
        and e["granted"] == "pull"
        for e in events
    )


def test_content_admin_pulls_quarantine(token_world: TokenWorld, layout: str, tmp_path: Path) -> None:
    seed(token_world, layout, "quarantine/app")
    result = token_world.skopeo_copy(
        "docker://quarantine/app:v1", f"oci:{tmp_path / 'q'}:v1", src_user="admin"
    )
    assert result.returncode == 0, result.stderr
    assert refused(token_world.skopeo_copy(layout, "docker://approved/app:v1", dest_user="admin"))


def test_pipeline_pushes_both_promotes_and_demotes(token_world: TokenWorld, layout: str) -> None:
    seed(token_world, layout, "quarantine/app")
    # Promotion: a copy inside the registry, quarantine -> approved (blobs mounted across).
    result = token_world.skopeo_copy(
        "docker://quarantine/app:v1", "docker://approved/app:v1", src_user="syncer", dest_user="syncer"
    )
    assert result.returncode == 0, result.stderr
    with token_world.client("syncer") as client:
        digest = client.head_manifest("approved/app", "v1").digest
        assert client.head_manifest("quarantine/app", "v1").digest == digest
        client.delete_manifest("approved/app", digest)  # demotion
        assert client.list_tags("approved/app").tags == []


# --- authentication ----------------------------------------------------------------------------


@pytest.mark.parametrize(("user", "password"), [("dev1", "wrong-password"), ("nobody", "whatever-it-is")])
def test_unknown_user_and_wrong_password_are_refused(
    token_world: TokenWorld, layout: str, tmp_path: Path, user: str, password: str
) -> None:
    seed(token_world, layout, "approved/app")
    answer = token_world.token(user, "repository:approved/app:pull", password=password)
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"].startswith("Basic realm=")
    assert "token" not in answer.json()
    result = token_world.skopeo_copy(
        "docker://approved/app:v1", f"oci:{tmp_path / 'x'}:v1", src_user=user, src_password=password
    )
    assert refused(result), result.stderr
    with token_world.client(user, password) as client, pytest.raises(RegistryAuthError):
        client.head_manifest("approved/app", "v1")
    refusals = [e for e in token_world.auth.events() if e["event"] == "refused"]
    assert refusals and all(e["user"] == user for e in refusals)
    assert {e["reason"] for e in refusals} == {"unknown user" if user == "nobody" else "wrong password"}
    assert password not in token_world.auth.log()


def test_anonymous_gets_what_the_anonymous_group_grants(token_world: TokenWorld, layout: str) -> None:
    seed(token_world, layout, "approved/public/hello", "approved/app")
    answer = token_world.token(None, "repository:approved/public/hello:pull")
    assert answer.status_code == 200
    assert jwt.decode(answer.json()["token"], options={"verify_signature": False})["access"] == []
    with token_world.client(None) as anonymous, pytest.raises(RegistryAuthError):
        anonymous.head_manifest("approved/public/hello", "v1")

    token_world.set_access(SPEC_ACCESS + '  anonymous: {members: [], pull: ["approved/public/*"]}\n')
    with token_world.client(None) as anonymous:
        assert anonymous.head_manifest("approved/public/hello", "v1").digest.startswith("sha256:")
        with pytest.raises(RegistryAuthError):
            anonymous.head_manifest("approved/app", "v1")


def test_users_file_changes_apply_without_restart(token_world: TokenWorld) -> None:
    token_world.passwords["dev3"] = "pw-of-dev3-which-is-new"
    assert token_world.token("dev3", "repository:approved/app:pull").status_code == 401
    write_users(token_world.users_file, {n: p for n, p in token_world.passwords.items() if n != "syncer"})
    token_world.set_access(SPEC_ACCESS.replace("[dev1, dev2]", "[dev1, dev2, dev3]"))
    answer = token_world.token("dev3", "repository:approved/app:pull")
    assert answer.status_code == 200
    claims = jwt.decode(answer.json()["token"], options={"verify_signature": False})
    assert claims["access"] == [{"type": "repository", "name": "approved/app", "actions": ["pull"]}]


# --- tokens ------------------------------------------------------------------------------------


def _manifest_status(world: TokenWorld, repository: str, token: str) -> int:
    return requests.head(
        f"http://{world.host}/v2/{repository}/manifests/v1",
        headers={"Authorization": f"Bearer {token}", "Accept": OCI_MANIFEST},
        timeout=10,
    ).status_code


def test_token_answer_and_claims(token_world: TokenWorld) -> None:
    answer = token_world.token(
        "admin", "repository:quarantine/app:pull,push", "repository:approved/app:pull", "registry:catalog:*"
    )
    assert answer.status_code == 200 and answer.headers["Cache-Control"] == "no-store"
    body = answer.json()
    assert body["token"] == body["access_token"] and body["expires_in"] == 300
    issued = datetime.strptime(body["issued_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert abs((datetime.now(UTC) - issued).total_seconds()) < 30
    signer = load_signer(token_world.key, token_world.cert)
    header = jwt.get_unverified_header(body["token"])
    assert header["alg"] == "ES256" and header["x5c"] == list(signer.x5c)
    claims = jwt.decode(
        body["token"], signer.key.public_key(), algorithms=["ES256"], audience=SERVICE, issuer="syncer"
    )
    assert claims["sub"] == "admin" and claims["exp"] - claims["iat"] == 300
    assert claims["access"] == [
        {"type": "repository", "name": "quarantine/app", "actions": ["pull"]},
        {"type": "repository", "name": "approved/app", "actions": ["pull"]},
    ]
    assert token_world.token("admin", "repository:approved").status_code == 400
    assert token_world.token("admin", service="").status_code == 400
    # A login without scopes (docker login) is answered and logged.
    assert token_world.token("dev1").status_code == 200
    assert any(e["event"] == "login" and e["user"] == "dev1" for e in token_world.auth.events())


def test_token_for_one_repository_does_not_open_another(token_world: TokenWorld, layout: str) -> None:
    seed(token_world, layout, "approved/app", "approved/other")
    token = token_world.token("dev1", "repository:approved/app:pull").json()["token"]
    assert _manifest_status(token_world, "approved/app", token) == 200
    assert _manifest_status(token_world, "approved/other", token) == 401
    # Nor does a token the registry's service name was not in.
    elsewhere = token_world.token("dev1", "repository:approved/app:pull", service="another-registry").json()[
        "token"
    ]
    assert _manifest_status(token_world, "approved/app", elsewhere) == 401


def test_expired_token_is_refused(token_world: TokenWorld, layout: str) -> None:
    seed(token_world, layout, "approved/app")
    signer = load_signer(token_world.key, token_world.cert)
    access = {Scope("repository", "approved/app", ("pull",)): ("pull",)}
    now = datetime.now(UTC)

    def forged(at: datetime) -> str:
        return issue_token(
            signer, issuer="syncer", service=SERVICE, subject="dev1", access=access, now=at, lifetime=60
        ).text

    assert _manifest_status(token_world, "approved/app", forged(now)) == 200
    # Distribution allows 60 s of clock skew: expired 5 minutes ago is beyond it.
    assert _manifest_status(token_world, "approved/app", forged(now - timedelta(minutes=6))) == 401
    # Signed by a key the registry does not trust: refused although the claims are right.
    stranger = ec.generate_private_key(ec.SECP256R1())
    fake = jwt.encode(
        jwt.decode(forged(now), options={"verify_signature": False}),
        stranger,
        algorithm="ES256",
        headers={"x5c": list(signer.x5c)},
    )
    assert _manifest_status(token_world, "approved/app", fake) == 401


# --- reloading the catalog ---------------------------------------------------------------------


def _wait_for_event(world: TokenWorld, event: str) -> dict[str, str]:
    deadline = time.monotonic() + RELOAD_TIMEOUT
    while time.monotonic() < deadline:
        found = [e for e in world.auth.events() if e["event"] == event]
        if found:
            return found[-1]
        time.sleep(0.02)
    raise AssertionError(f"no {event} in the auth server log:\n{world.auth.log()}")


def test_invalid_access_yaml_keeps_old_rules_and_valid_change_applies(
    token_world: TokenWorld,
    layout: str,
    tmp_path: Path,
) -> None:
    seed(token_world, layout, "quarantine/app")
    token_world.set_access(
        SPEC_ACCESS.replace('["quarantine/*", "approved/*"]', '["Quarantine/*"]').replace(
            "[dev1, dev2]", "[dev1, dev2, admin]"
        )
    )
    # The request that notices the change still gets the old rules.
    admin = token_world.skopeo_copy(
        "docker://quarantine/app:v1", f"oci:{tmp_path / 'a'}:v1", src_user="admin"
    )
    assert admin.returncode == 0, admin.stderr
    failure = _wait_for_event(token_world, "reload-failed")
    assert failure["kept"] == "previous" and "access.yaml:" in failure["error"]
    assert "'pull' pattern 'Quarantine/*'" in failure["error"]
    # Logged once per change, not once per request.
    token_world.token("admin", "repository:quarantine/app:pull")
    assert sum(e["event"] == "reload-failed" for e in token_world.auth.events()) == 1

    token_world.set_access(
        SPEC_ACCESS.replace('pull: ["approved/*"]', 'pull: ["approved/*", "quarantine/*"]')
    )
    dev = token_world.skopeo_copy("docker://quarantine/app:v1", f"oci:{tmp_path / 'd'}:v1", src_user="dev1")
    assert dev.returncode == 0, dev.stderr
    assert _wait_for_event(token_world, "reloaded")["what"].startswith("catalog")


# --- the log -----------------------------------------------------------------------------------


def test_log_has_no_secrets(token_world: TokenWorld, layout: str) -> None:
    seed(token_world, layout, "approved/app")
    tokens = [
        token_world.token(u, "repository:approved/app:pull").json()["token"]
        for u in ("dev1", "admin", "syncer")
    ]
    token_world.token("dev1", "repository:approved/app:pull", password="not-the-password")
    log = token_world.auth.log()
    for secret in [*token_world.passwords.values(), *tokens, "not-the-password"]:
        assert secret not in log
    for user, password in token_world.passwords.items():
        assert base64.b64encode(f"{user}:{password}".encode()).decode() not in log
    for line in log.splitlines()[1:]:
        assert line.split(" ")[1].startswith("event=")


# --- hostile logins ----------------------------------------------------------------------------

UNTHROTTLED = ("--user-login-failures", "1000", "--client-login-failures", "1000")
THROTTLED = (
    "--user-login-failures",
    "3",
    "--client-login-failures",
    "6",
    "--login-lockout",
    "1",
    "--trusted-proxy",
    "127.0.0.1",
)
LOCKOUT = 1.0


@pytest.mark.parametrize("token_world", [UNTHROTTLED], indirect=True)
def test_over_long_password_is_refused_cleanly(token_world: TokenWorld) -> None:
    passwords = ["x" * 73, "é" * 37, "p" * 4096]
    for password in passwords:
        for user in ("dev1", "nobody"):
            # As UTF-8 (requests sends a str as Latin-1): 'é' * 37 is 37 characters, 74 bytes.
            answer = requests.get(
                f"{token_world.auth.url}/token",
                timeout=10,
                params={"service": SERVICE, "scope": "repository:approved/app:pull"},
                auth=(user.encode(), password.encode()),
            )
            assert answer.status_code == 401, answer.text
            assert answer.json()["errors"][0]["message"] == "password longer than 72 bytes"
    log = token_world.auth.log()
    assert "Traceback" not in log and not any(password in log for password in passwords)
    refusals = [e for e in token_world.auth.events() if e["event"] == "refused"]
    assert [(e["user"], e["reason"]) for e in refusals] == len(passwords) * [
        ("dev1", "password longer than 72 bytes"),
        ("nobody", "password longer than 72 bytes"),
    ]
    # 72 bytes exactly is an ordinary password: checked, and wrong.
    answer = token_world.token("dev1", password="y" * 72)
    assert answer.status_code == 401 and token_world.auth.events()[-1]["reason"] == "wrong password"


def _seconds(attempt) -> float:
    start = time.perf_counter()
    attempt()
    return time.perf_counter() - start


@pytest.mark.parametrize("token_world", [UNTHROTTLED], indirect=True)
def test_unknown_user_costs_what_a_known_one_does(token_world: TokenWorld) -> None:
    def known() -> None:
        assert token_world.token("dev1", password="wrong-password").status_code == 401

    def unknown() -> None:
        assert token_world.token("nobody", password="wrong-password").status_code == 401

    known(), unknown()  # connections and the dummy hash are made before anything is timed
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=MIN_BCRYPT_COST))
    one_check = min(_seconds(lambda: bcrypt.checkpw(b"no", hashed)) for _ in range(3))
    # In adjacent pairs, in alternating order, so that a busy machine slows both alike.
    pairs = []
    for n in range(9):
        if n % 2:
            known_one = _seconds(known)
            unknown_one = _seconds(unknown)
        else:
            unknown_one = _seconds(unknown)
            known_one = _seconds(known)
        pairs.append((known_one, unknown_one))
    known_time = statistics.median(k for k, _ in pairs)
    unknown_time = statistics.median(u for _, u in pairs)
    ratio = statistics.median(u / k for k, u in pairs)
    # Each costs one bcrypt check of the users' cost, no more: not two (a hash made per
    # request, as before), and not none (a shortcut for names that do not exist).
    assert known_time >= 0.8 * one_check and unknown_time >= 0.8 * one_check, (
        known_time,
        unknown_time,
        one_check,
    )
    assert 1 / 1.5 < ratio < 1.5, (ratio, pairs, one_check)


def _status(world: TokenWorld, user: str, address: str, password: str | None = None) -> int:
    return world.token(user, password=password, forwarded_for=address).status_code


@pytest.mark.parametrize("token_world", [THROTTLED], indirect=True)
def test_failed_logins_of_a_user_are_throttled_then_recover(token_world: TokenWorld) -> None:
    world = token_world
    assert _status(world, "dev2", "192.0.2.10") == 200  # where dev2 works
    for n in range(3):
        assert _status(world, "dev1", f"192.0.2.{n + 1}", "guess") == 401
        assert _status(world, "dev2", f"192.0.2.{n + 11}", "guess") == 401
    locked_at = time.monotonic()
    answer = world.token("dev1", forwarded_for="192.0.2.4")  # the right password, elsewhere
    assert answer.status_code == 429 and answer.headers["Retry-After"] == "1"
    assert "too many failed logins" in answer.json()["errors"][0]["message"]
    # Attempts while locked are not checked, do not count and do not prolong the lock.
    for _ in range(5):
        assert _status(world, "dev1", "192.0.2.5", "guess") == 429
    assert _status(world, "dev2", "192.0.2.14") == 429
    # Guessing at dev2's password does not keep him out where he logged in before.
    assert _status(world, "dev2", "192.0.2.10") == 200

    time.sleep(max(0.0, locked_at + LOCKOUT + 0.2 - time.monotonic()))
    assert _status(world, "dev1", "192.0.2.4") == 200
    assert _status(world, "dev2", "192.0.2.14") == 200
    throttled = [e for e in world.auth.events() if e["event"] == "throttled"]
    first = {"user": "dev1", "client": "192.0.2.4", "retry_after": "1"}
    assert first.items() <= throttled[0].items()
    assert sum(e["user"] == "dev1" for e in throttled) == 6
    assert sum(e["event"] == "refused" and e["user"] == "dev1" for e in world.auth.events()) == 3


@pytest.mark.parametrize("token_world", [THROTTLED], indirect=True)
def test_failed_logins_from_an_address_are_throttled_then_recover(token_world: TokenWorld) -> None:
    world = token_world
    for n in range(6):  # a different name each time: only the address's limit is reached
        assert _status(world, f"user{n}", "198.51.100.7", "guess") == 401
    locked_at = time.monotonic()
    assert _status(world, "admin", "198.51.100.7") == 429
    assert _status(world, "admin", "198.51.100.8") == 200
    # A robot has no lock of its own: guessing its secret cannot stop the pipeline.
    for n in range(5):
        assert _status(world, "syncer", f"203.0.113.{n}", "robot-guess") == 401
    assert _status(world, "syncer", "203.0.113.99") == 200
    time.sleep(max(0.0, locked_at + LOCKOUT + 0.2 - time.monotonic()))
    assert _status(world, "admin", "198.51.100.7") == 200
    assert {e["client"] for e in world.auth.events() if e["event"] == "throttled"} == {"198.51.100.7"}


def test_weak_bcrypt_cost_is_warned_about_at_start(token_world: TokenWorld) -> None:
    weak = token_world.workdir / "weak.htpasswd"
    write_users(weak, {"dev1": token_world.passwords["dev1"]}, cost=5)
    strong = (token_world.users_file.read_text().splitlines())[1]  # dev2, at cost 10
    weak.write_text(weak.read_text() + strong + "\n")
    server = AuthServer(
        token_world.workdir / "weak-server.log",
        key=token_world.key,
        cert=token_world.cert,
        catalog=token_world.catalog,
        users=weak,
        robot=Robot("syncer", token_world.passwords["syncer"]),
    )
    try:
        warning = next(line for line in server.log().splitlines() if "warning" in line)
        assert f"{weak}: bcrypt cost below 10 for dev1 (5);" in warning
        assert "htpasswd -B -C 10" in warning and "dev2" not in warning
        # A warning, not a refusal: the user still logs in.
        answer = requests.get(
            f"{server.url}/token",
            params={"service": SERVICE},
            auth=("dev1", token_world.passwords["dev1"]),
            timeout=10,
        )
        assert answer.status_code == 200
    finally:
        server.stop()
    assert "warning" not in token_world.auth.log()


# --- access-config -----------------------------------------------------------------------------


def _access_config(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = cli.main(["access-config", *args])
    return code, out.getvalue(), err.getvalue()


def test_access_config_writes_key_bundle_and_config(tmp_path: Path) -> None:
    out = tmp_path / "auth"
    code, printed, _ = _access_config(
        "--auth-url",
        "https://auth.example.com/",
        "--service",
        "registry.example.com",
        "--out",
        str(out),
        "--json",
    )
    assert code == 0
    config = json.loads(printed)
    assert config["auth"]["token"] == {
        "realm": "https://auth.example.com/token",
        "service": "registry.example.com",
        "issuer": "syncer",
        "rootcertbundle": str((out / "token-bundle.pem").resolve()),
    }
    assert stat.S_IMODE((out / "token-signing.key").stat().st_mode) == 0o600
    signer = load_signer(out / "token-signing.key", out / "token-signing.crt")
    assert signer.algorithm == "ES256"
    key_before = (out / "token-signing.key").read_bytes()
    code, printed, messages = _access_config(
        "--auth-url", "https://auth.example.com/token", "--service", "r", "--out", str(out)
    )
    assert code == 0 and "reusing" in messages
    assert (out / "token-signing.key").read_bytes() == key_before
    assert 'realm: "https://auth.example.com/token"' in printed
    assert "syncer auth-server --listen" in printed


def test_access_config_refuses_bad_input(tmp_path: Path) -> None:
    code, _, err = _access_config("--auth-url", "ftp://x", "--service", "r", "--out", str(tmp_path))
    assert code == 2 and "not an http(s) URL" in err
    _access_config("--auth-url", "https://a", "--service", "r", "--out", str(tmp_path / "one"))
    _access_config("--auth-url", "https://a", "--service", "r", "--out", str(tmp_path / "two"))
    code, _, err = _access_config(
        "--auth-url",
        "https://a",
        "--service",
        "r",
        "--out",
        str(tmp_path / "three"),
        "--key",
        str(tmp_path / "one" / "token-signing.key"),
        "--cert",
        str(tmp_path / "two" / "token-signing.crt"),
    )
    assert code == 2 and "is not for the key" in err
    code, _, err = _access_config(
        "--auth-url",
        "https://a",
        "--service",
        "r",
        "--out",
        str(tmp_path),
        "--key",
        str(tmp_path / "one" / "x"),
    )
    assert code == 2 and "--key and --cert go together" in err


def test_auth_server_refuses_to_start_on_invalid_catalog(tmp_path: Path) -> None:
    _access_config("--auth-url", "http://127.0.0.1:1", "--service", "r", "--out", str(tmp_path))
    (tmp_path / "catalog").mkdir()
    err = io.StringIO()
    with redirect_stderr(err):
        code = cli.main(
            [
                "auth-server",
                "--listen",
                "127.0.0.1:0",
                "--key",
                str(tmp_path / "token-signing.key"),
                "--cert",
                str(tmp_path / "token-signing.crt"),
                "--catalog",
                str(tmp_path / "catalog"),
            ]
        )
    assert code == 2 and "settings.yaml" in err.getvalue()


# --- the parts ---------------------------------------------------------------------------------


def test_parse_scopes() -> None:
    assert parse_scopes(["repository:approved/app:pull,push", "registry:catalog:*"]) == [
        Scope("repository", "approved/app", ("pull", "push")),
        Scope("registry", "catalog", ("*",)),
    ]
    assert parse_scopes(["repository:a:pull repository:b:push"]) == [
        Scope("repository", "a", ("pull",)),
        Scope("repository", "b", ("push",)),
    ]
    assert str(Scope("repository", "a/b", ("pull", "push"))) == "repository:a/b:pull,push"
    for bad in ("repository", "repository:app", "repository::pull", ":app:pull"):
        with pytest.raises(ValueError, match="TYPE:NAME:ACTIONS"):
            parse_scopes([bad])


def test_htpasswd_from_the_real_tool_and_refusals(tmp_path: Path) -> None:
    path = tmp_path / "users"
    write_users(path, {"ann": "ann-password", "bob": "bob-password"})
    users = parse_htpasswd(path.read_text() + "# comment\n\n", "users")
    assert set(users) == {"ann", "bob"} and users["ann"].startswith(b"$2y$")
    accounts = Accounts(users, {"robot": "r" * 20})
    assert accounts.check("ann", "ann-password") is None
    assert accounts.check("ann", "bob-password") == "wrong password"
    assert accounts.check("carl", "ann-password") == "unknown user"
    assert accounts.check("robot", "r" * 20) is None
    assert accounts.check("robot", "r" * 19) == "wrong robot secret"
    md5 = subprocess.run(
        ["htpasswd", "-imn", "old"], input="pw", text=True, capture_output=True, check=True
    ).stdout
    with pytest.raises(UsageError, match=r"users:1: user 'old' has a hash that is not bcrypt"):
        parse_htpasswd(md5, "users")
    with pytest.raises(UsageError, match="users:2: user 'ann' appears twice"):
        parse_htpasswd(path.read_text().splitlines()[0] + "\n" + path.read_text(), "users")
    with pytest.raises(UsageError, match="users:1: expected USER:HASH"):
        parse_htpasswd("no colon here\n", "users")
    bad_cost = users["ann"].decode()[:4] + "99" + users["ann"].decode()[6:]
    with pytest.raises(UsageError, match="users:1: user 'ann' has a hash that is not bcrypt"):
        parse_htpasswd(f"ann:{bad_cost}\n", "users")
    assert accounts.check("ann", "ann-password" + "x" * 61) == "password longer than 72 bytes"
    assert accounts.check("carl", "x" * 73) == "password longer than 72 bytes"
    assert accounts.check("robot", "r" * 100) == "wrong robot secret"
    with pytest.raises(UsageError, match="ann is both a user"):
        Accounts(users, {"ann": "x" * 20})


def test_robots_from_env_never_echo_the_secret() -> None:
    secret = "s3cret-value-of-the-robot"
    assert robots_from_env(["R"], {"R": f"syncer:{secret}"}) == {"syncer": secret}
    cases = {
        "R_UNSET": ({}, "is not set or empty"),
        "R_FORM": ({"R_FORM": secret}, "is not ROBOT_NAME:SECRET"),
        "R_SHORT": ({"R_SHORT": "syncer:short"}, "shorter than 16"),
    }
    for var, (environ, message) in cases.items():
        with pytest.raises(UsageError, match=message) as info:
            robots_from_env([var], environ)
        assert secret not in str(info.value) and "tiny-secret" not in str(info.value)
    with pytest.raises(UsageError, match="defined twice"):
        robots_from_env(["A", "B"], {"A": f"x:{secret}", "B": f"x:{secret}"})


def test_load_signer_refuses_what_a_registry_could_not_use(tmp_path: Path) -> None:
    _access_config("--auth-url", "http://127.0.0.1:1", "--service", "r", "--out", str(tmp_path))
    cert = tmp_path / "token-signing.crt"
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    with pytest.raises(UsageError, match="is encrypted"):
        load_signer(encrypted, cert)
    with pytest.raises(UsageError, match="is not a PEM certificate"):
        load_signer(tmp_path / "token-signing.key", tmp_path / "token-signing.key")
    with pytest.raises(UsageError, match="cannot read"):
        load_signer(tmp_path / "missing.key", cert)


def test_service_answers_only_get_token_with_basic_credentials(tmp_path: Path) -> None:
    _access_config("--auth-url", "http://127.0.0.1:1", "--service", "r", "--out", str(tmp_path))
    service = TokenService(
        load_signer(tmp_path / "token-signing.key", tmp_path / "token-signing.crt"),
        issuer="syncer",
        lifetime=60,
        rules=lambda: (),
        accounts=lambda: Accounts({}, {"robot": "r" * 20}),
    )
    base = {"REQUEST_METHOD": "GET", "PATH_INFO": "/token", "QUERY_STRING": "service=r"}
    assert service.respond({**base, "PATH_INFO": "/v2/"}).status.startswith("404")
    assert service.respond({**base, "REQUEST_METHOD": "POST"}).status.startswith("405")
    for header in ("Bearer abc", "Basic !!!", "Basic " + base64.b64encode(b"no-colon").decode()):
        answer = service.respond({**base, "HTTP_AUTHORIZATION": header})
        assert answer.status.startswith("401") and dict(answer.headers)["WWW-Authenticate"]
    robot = "Basic " + base64.b64encode(b"robot:" + b"r" * 20).decode()
    answer = service.respond({**base, "HTTP_AUTHORIZATION": robot})
    assert answer.status == "200 OK"
    assert jwt.decode(answer.body["token"], options={"verify_signature": False})["sub"] == "robot"


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_throttle_doubles_the_wait_up_to_the_cap_and_forgets() -> None:
    clock = _Clock()
    throttle = LoginThrottle(
        ThrottleSettings(user_failures=2, client_failures=100, max_delay=5, forget_after=60), clock
    )
    waits = []
    for _ in range(6):
        throttle.failed("ann", "10.0.0.1")
        waits.append(throttle.wait("ann", "10.0.0.2"))
        clock.now += waits[-1]  # the next guess comes as soon as it may
    assert waits == [0, 1, 2, 4, 5, 5]
    assert throttle.wait("bob", "10.0.0.2") == 0 and throttle.wait(None, "10.0.0.2") == 0
    clock.now += 61
    assert throttle.wait("ann", "10.0.0.2") == 0
    throttle.failed("ann", "10.0.0.1")
    assert throttle.wait("ann", "10.0.0.1") == 0, "forgotten: counting starts afresh"


def test_throttle_lets_the_user_in_where_he_logged_in_and_never_locks_robots() -> None:
    clock = _Clock()
    throttle = LoginThrottle(ThrottleSettings(user_failures=1, client_failures=3), clock)
    throttle.succeeded("ann", "10.0.0.9")
    throttle.failed("ann", "10.0.0.1")
    assert throttle.wait("ann", "10.0.0.2") == 1
    assert throttle.wait("ann", "10.0.0.9") == 0
    for n in range(3):
        throttle.failed("robot", f"10.0.1.{n}", robot=True)
    assert throttle.wait("robot", "10.0.1.99", robot=True) == 0
    for _ in range(3):
        throttle.failed("robot", "10.0.1.50", robot=True)
    assert throttle.wait("robot", "10.0.1.50", robot=True) == 1, "the address's limit holds"
    throttle.succeeded("ann", "10.0.0.2")
    assert throttle.wait("ann", "10.0.0.3") == 0, "a login clears the user's failures"


def test_throttle_memory_is_bounded() -> None:
    throttle = LoginThrottle(ThrottleSettings(user_failures=1, client_failures=1, capacity=50), _Clock())
    for n in range(10_000):
        throttle.failed(f"user{n}", f"10.{n // 65536}.{n // 256 % 256}.{n % 256}")
        throttle.succeeded(f"user{n}", "10.255.0.1")
    assert len(throttle._failures) <= 50 and len(throttle._known) <= 50
    assert throttle.wait("user9999", "10.0.39.15") > 0, "the newest are kept"


def test_throttle_settings_are_checked() -> None:
    with pytest.raises(UsageError, match="between 1 and 900 seconds"):
        ThrottleSettings(max_delay=0.5)
    with pytest.raises(UsageError, match="at least 1"):
        ThrottleSettings(user_failures=0)
