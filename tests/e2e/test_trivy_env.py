"""The environment syncer chooses for Trivy, and the DB options it reads from Trivy's variables
(pure functions of an environment)."""

from __future__ import annotations

from pathlib import Path

import pytest

from syncer.errors import UsageError
from syncer.tools import trivy

ENVIRONMENT = {
    "PATH": "/usr/bin",
    "HOME": "/home/ci",
    "TMPDIR": "/tmp/ci",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "LC_TIME": "en_GB.UTF-8",
    "HTTP_PROXY": "http://proxy:3128",
    "https_proxy": "http://proxy:3128",
    "NO_PROXY": "local",
    "no_proxy": "local",
    "SSL_CERT_FILE": "/etc/ca.pem",
    "SSL_CERT_DIR": "/etc/certs",
    "TRIVY_CACHE_DIR": "/cache",
    "TRIVY_SKIP_DB_UPDATE": "true",
    "TRIVY_DB_REPOSITORY": "m/db:2",
    "TRIVY_SEVERITY": "LOW",
    "TRIVY_SERVER": "http://127.0.0.1:1",
    "TRIVY_PASSWORD": "pw",
    "TRIVY_IGNOREFILE": "",
    "trivy_severity": "LOW",
    "SYNCER_SIGNING_PASSPHRASE": "secret",
    "TARGET_PASSWORD": "secret",
    "AWS_SECRET_ACCESS_KEY": "x",
    "DOCKER_CONFIG": "/home/ci/.docker",
    "GITHUB_TOKEN": "ghs_x",
}


def test_split_passes_what_trivy_needs_reads_db_variables_and_names_the_rest():
    split = trivy.split_environment(ENVIRONMENT)
    assert dict(split.passed) == {
        k: ENVIRONMENT[k]
        for k in (
            "PATH",
            "HOME",
            "TMPDIR",
            "LANG",
            "LC_ALL",
            "LC_TIME",
            "HTTP_PROXY",
            "https_proxy",
            "NO_PROXY",
            "no_proxy",
            "SSL_CERT_FILE",
            "SSL_CERT_DIR",
        )
    }
    assert dict(split.honoured) == {
        "TRIVY_CACHE_DIR": "/cache",
        "TRIVY_SKIP_DB_UPDATE": "true",
        "TRIVY_DB_REPOSITORY": "m/db:2",
    }
    # Sorted names only; an empty value is unset for Trivy too; Trivy reads upper case only.
    assert split.ignored == ("TRIVY_PASSWORD", "TRIVY_SERVER", "TRIVY_SEVERITY")


def test_nothing_but_the_chosen_variables_is_passed():
    passed = trivy.split_environment(ENVIRONMENT).passed
    assert not {k for k in passed if "TRIVY" in k.upper() or "SECRET" in k or "PASS" in k or "TOKEN" in k}


def test_options_default_to_syncer_then_trivy_variables():
    home_default = str(Path("~/.cache/syncer/trivy").expanduser())
    assert trivy.resolve_options({}) == trivy.TrivyOptions(cache_dir=home_default)
    env = {
        "TRIVY_CACHE_DIR": "/trivy",
        "TRIVY_SKIP_DB_UPDATE": "1",
        "TRIVY_SKIP_JAVA_DB_UPDATE": "True",
        "TRIVY_DB_REPOSITORY": "a/db:2, b/db:2",
        "TRIVY_JAVA_DB_REPOSITORY": "a/java-db:1 b/java-db:1",
    }
    assert trivy.resolve_options(env) == trivy.TrivyOptions(
        cache_dir="/trivy",
        skip_db_update=True,
        skip_java_db_update=True,
        db_repository="a/db:2,b/db:2",
        java_db_repository="a/java-db:1,b/java-db:1",
    )
    assert trivy.resolve_options({**env, "SYNCER_TRIVY_CACHE": "/syncer"}).cache_dir == "/syncer"


def test_flags_win_over_variables():
    env = {
        "TRIVY_CACHE_DIR": "/trivy",
        "TRIVY_SKIP_DB_UPDATE": "false",
        "TRIVY_DB_REPOSITORY": "env/db:2",
        "TRIVY_JAVA_DB_REPOSITORY": "env/java-db:1",
    }
    assert trivy.resolve_options(
        env,
        cache_dir="/flag",
        skip_db_update=True,
        db_repository="flag/db:2",
        java_db_repository="flag/java-db:1",
        server="http://trivy:4954/",
    ) == trivy.TrivyOptions(
        cache_dir="/flag",
        skip_db_update=True,
        db_repository="flag/db:2",
        java_db_repository="flag/java-db:1",
        server="http://trivy:4954",
    )


@pytest.mark.parametrize("value", ["yes", "on", "TRUE ", "2"])
def test_a_bad_boolean_is_a_usage_error_naming_the_variable(value):
    with pytest.raises(UsageError, match=r"TRIVY_SKIP_JAVA_DB_UPDATE=.* is not a boolean"):
        trivy.resolve_options({"TRIVY_SKIP_JAVA_DB_UPDATE": value})


@pytest.mark.parametrize(
    "url", ["trivy:4954", "ftp://trivy", "http://", "http://u:p@trivy:4954", "http://trivy?x=1"]
)
def test_a_server_is_an_http_url_without_credentials(url):
    with pytest.raises(UsageError, match="--trivy-server"):
        trivy.server_url(url)


def test_updates_say_whether_prepare_may_download():
    assert trivy.TrivyOptions("/c").updates
    assert trivy.TrivyOptions("/c", skip_db_update=True).updates  # the Java DB still may
    assert not trivy.TrivyOptions("/c", skip_db_update=True, skip_java_db_update=True).updates
    assert not trivy.TrivyOptions("/c", skip_java_db_update=True, server="http://t").updates
