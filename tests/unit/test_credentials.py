"""``syncer.tools.credentials``: which auth file and entry answers for a registry, as containers/image
and docker read them. The helper boundary is faked here (``run_helper``); the real protocol
runs against a script on PATH in tests/e2e/test_registry_config_e2e.py."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from syncer.core import redact
from syncer.errors import CredentialError
from syncer.tools.credentials import HUB_INDEX, AuthFile, HelperAnswer, auth_files, lookup


def b64(pair: str) -> str:
    return base64.b64encode(pair.encode()).decode()


def env(tmp_path: Path, **more: str) -> dict[str, str]:
    (tmp_path / "home").mkdir(exist_ok=True)
    return {"HOME": str(tmp_path / "home"), "XDG_RUNTIME_DIR": str(tmp_path / "run"), **more}


def docker_config(tmp_path: Path, document: object) -> Path:
    path = tmp_path / "home" / ".docker" / "config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document))
    return path


def no_helper(name: str, server: str, configured: str) -> HelperAnswer | None:
    raise AssertionError(f"no helper expected, asked {name} for {server}")


def test_the_order_of_containers_auth_json():
    assert auth_files({"HOME": "/h", "XDG_RUNTIME_DIR": "/run/user/7"}, 7) == [
        AuthFile("/run/user/7/containers/auth.json"),
        AuthFile("/h/.config/containers/auth.json"),
        AuthFile("/h/.docker/config.json"),
        AuthFile("/h/.dockercfg", legacy=True),
    ]
    assert auth_files({"HOME": "/h", "XDG_CONFIG_HOME": "/cfg", "DOCKER_CONFIG": "/d"}, 7) == [
        AuthFile("/run/containers/7/auth.json"),
        AuthFile("/cfg/containers/auth.json"),
        AuthFile("/d/config.json"),
        AuthFile("/h/.dockercfg", legacy=True),
    ]
    # As for skopeo and podman, REGISTRY_AUTH_FILE is the only file then.
    assert auth_files({"HOME": "/h", "REGISTRY_AUTH_FILE": "/a.json"}, 7) == [AuthFile("/a.json")]


@pytest.mark.parametrize(
    "key", [HUB_INDEX, "docker.io", "index.docker.io", "registry-1.docker.io", "https://registry-1.docker.io"]
)
def test_docker_hub_under_every_key_docker_writes(tmp_path, key):
    path = docker_config(tmp_path, {"auths": {key: {"auth": b64("hubuser:hub-secret-1")}}})
    found = lookup("docker.io", environ=env(tmp_path), run_helper=no_helper)
    assert found is not None and found.credentials.username == "hubuser"
    assert found.credentials.password == "hub-secret-1"
    assert found.source == f"auth file {path} (entry {key!r})"
    assert redact.redact("token hub-secret-1") == "token ***"


def test_the_exact_key_wins_over_a_url_form_and_namespaces_are_not_used(tmp_path):
    docker_config(
        tmp_path,
        {
            "auths": {
                "https://reg.example:5000/v1/": {"auth": b64("url:p1")},
                "reg.example:5000/team": {"auth": b64("team:p2")},
                "reg.example:5000": {"auth": b64("exact:p3")},
            }
        },
    )
    found = lookup("reg.example:5000", environ=env(tmp_path), run_helper=no_helper)
    assert found is not None and found.credentials.username == "exact"
    docker_config(tmp_path, {"auths": {"reg.example:5000/team": {"auth": b64("team:p2")}}})
    assert lookup("reg.example:5000", environ=env(tmp_path), run_helper=no_helper) is None


def test_legacy_dockercfg(tmp_path):
    path = tmp_path / "home" / ".dockercfg"
    path.parent.mkdir(parents=True)
    path.write_text(
        json.dumps({"https://old.example/v1/": {"auth": b64("old:legacy-pw"), "email": "x@example"}})
    )
    found = lookup("old.example", environ=env(tmp_path), run_helper=no_helper)
    assert found is not None and found.credentials.password == "legacy-pw"


def test_helpers_first_then_credsstore_then_auths(tmp_path):
    asked: list[tuple[str, str]] = []

    def helper(name: str, server: str, configured: str) -> HelperAnswer | None:
        asked.append((name, server))
        return HelperAnswer("from-" + name, "s3cret-" + name) if name != "empty" else None

    path = docker_config(
        tmp_path,
        {
            "credHelpers": {"docker.io": "hub"},
            "credsStore": "desktop",
            "auths": {"other.example": {"auth": b64("file:pw")}},
        },
    )
    found = lookup("docker.io", environ=env(tmp_path), run_helper=helper)
    assert found is not None and found.credentials.username == "from-hub"
    assert found.source == (
        f"credential helper docker-credential-hub (credHelpers entry 'docker.io' in {path})"
    )
    assert asked == [("hub", HUB_INDEX)]  # docker's name for Hub, asked first

    found = lookup("other.example", environ=env(tmp_path), run_helper=helper)
    assert found is not None and found.credentials.username == "from-desktop"
    assert found.source == f"credential helper docker-credential-desktop (credsStore in {path})"

    # A store that holds nothing for the registry leaves the file's own entry.
    docker_config(tmp_path, {"credsStore": "empty", "auths": {"other.example": {"auth": b64("file:pw")}}})
    found = lookup("other.example", environ=env(tmp_path), run_helper=helper)
    assert found is not None and found.credentials.username == "file"


def test_hub_helper_asked_under_docker_io_when_the_index_url_holds_nothing(tmp_path):
    asked = []

    def helper(name: str, server: str, configured: str) -> HelperAnswer | None:
        asked.append(server)
        return HelperAnswer("u", "p-hub-2") if server == "docker.io" else None

    docker_config(tmp_path, {"credsStore": "pass"})
    found = lookup("docker.io", environ=env(tmp_path), run_helper=helper)
    assert found is not None and asked == [HUB_INDEX, "docker.io"]


def test_an_earlier_file_answers_and_an_empty_marker_does_not(tmp_path):
    runtime = tmp_path / "run" / "containers" / "auth.json"
    runtime.parent.mkdir(parents=True)
    runtime.write_text(json.dumps({"auths": {"r.example": {}}}))  # docker's marker: no answer
    docker_config(tmp_path, {"auths": {"r.example": {"auth": b64("docker:pw-d")}}})
    found = lookup("r.example", environ=env(tmp_path), run_helper=no_helper)
    assert found is not None and found.credentials.username == "docker"
    runtime.write_text(json.dumps({"auths": {"r.example": {"auth": b64("podman:pw-p")}}}))
    found = lookup("r.example", environ=env(tmp_path), run_helper=no_helper)
    assert found is not None and found.credentials.username == "podman"
    assert str(runtime) in found.source


@pytest.mark.parametrize(
    "document, message",
    [
        ({"auths": {"r.example": {"identitytoken": "refresh"}}}, "holds an identity token"),
        ({"auths": {"r.example": {"auth": "%%%"}}}, "'auth' is not base64 of user:password"),
        ({"auths": {"r.example": {"auth": b64("no-colon")}}}, "holds no ':' between user and password"),
        ({"auths": ["r.example"]}, "'auths' is not a JSON object"),
        (["not", "an", "object"], "does not hold a JSON object"),
    ],
)
def test_unusable_entries_name_the_file_and_the_remedy(tmp_path, document, message):
    path = docker_config(tmp_path, document)
    with pytest.raises(CredentialError) as caught:
        lookup("r.example", environ=env(tmp_path), run_helper=no_helper)
    assert str(path) in str(caught.value) and message in str(caught.value)


def test_a_helper_giving_an_identity_token_is_refused(tmp_path):
    docker_config(tmp_path, {"credHelpers": {"r.example": "ecr"}})
    with pytest.raises(CredentialError, match="gave an identity token"):
        lookup(
            "r.example",
            environ=env(tmp_path),
            run_helper=lambda name, server, configured: HelperAnswer("<token>", "t"),
        )


def test_a_real_helper_that_prints_nonsense_is_named(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    helper = bin_dir / "docker-credential-odd"
    helper.write_text("#!/bin/sh\necho not json\n")
    helper.chmod(0o755)
    path = docker_config(tmp_path, {"credHelpers": {"r.example": "odd"}})
    with pytest.raises(CredentialError) as caught:
        lookup("r.example", environ=env(tmp_path, PATH=f"{bin_dir}:/usr/bin:/bin"))
    assert str(caught.value) == (
        f"credential helper docker-credential-odd (credHelpers entry 'r.example' in {path}) "
        "printed no JSON object with Username and Secret for r.example"
    )
