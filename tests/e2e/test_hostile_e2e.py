"""A hostile upstream (tests/harness/hostile.py) through the real ``syncer run`` and ``syncer
plan``: each bad answer fails its own entry with a clear message, no secret it echoes is
printed or kept, and a healthy image from another registry is promoted in the same run."""

from __future__ import annotations

import base64
import re
import secrets
import textwrap
import tracemalloc

import pytest

from syncer.core.model import State
from syncer.demo.registry import make_tls_material
from syncer.errors import RegistryError
from syncer.tools.registry import RegistryClient
from tests.e2e.test_faults_e2e import CLEAN_ALPINE, assert_invariants
from tests.harness.hostile import HostileRegistry
from tests.harness.images import alpine_files, build_image

USER = "syncer"
PASSWORD = f"pw-{secrets.token_urlsafe(16)}"
BASIC = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()

MASKED = r"(?:\\?\*){3}"  # "***", as the run summary escapes it or not
# entry name -> what its failure must say (regex over the run summary's "error in NAME:" line)
FAILING = {
    "seven": r"cannot list tags of hostile\.test/seven: .*'tags' is 7, not a list",
    "loop": r"redirected GET more than 10 times .*a loop",
    "gzip": r"Content-Encoding: gzip that is not gzip",
    "cut": r"broke off its answer .*gave up after 5 attempts",
    "huge": r"sent an answer larger than the 4 MiB",
    "announced": r"announced an answer of 314572800 bytes",
    "stall": r"sent its answer too slowly",
    "malformed": r"answered 401 with a malformed WWW-Authenticate header .*unterminated.*broken",
    "realm": r"names a plain-HTTP token server .*with tls_verify on",
    "echo403": rf"denied GET on echo403 \(DENIED: you sent Authorization: Basic {MASKED} \({MASKED}\)\)",
    "echo500": rf"answered 500 \(DENIED: you sent Authorization: Basic {MASKED} \({MASKED}\)\)",
}
QUIET = ("nulltags", "junk")  # answers that are odd but usable: no failure


@pytest.fixture
def hostile(tmp_path):
    ca, cert, key = make_tls_material(tmp_path / "tls")
    with (
        HostileRegistry() as plain,
        HostileRegistry(credentials=(USER, PASSWORD)) as echo,
        HostileRegistry(tls=(cert, key)) as tls,
    ):
        yield {"hostile.test": plain, "echo.test": echo, "tls.test": tls, "ca_dir": ca.parent}


def _hostile_world(world, hostile) -> str:
    world.db.write(())
    alpine = world.push("library/alpine:3.20", build_image(alpine_files(CLEAN_ALPINE)))
    world.write_settings(
        other_sources=f"""
        hostile.test:
          endpoint: {hostile["hostile.test"].host}
          tls_verify: false
        echo.test:
          endpoint: {hostile["echo.test"].host}
          tls_verify: false
          auth: {{username_env: HOSTILE_USER, password_env: HOSTILE_PASSWORD}}
        tls.test:
          endpoint: {hostile["tls.test"].host}
          ca_dir: {hostile["ca_dir"]}
    """
    )
    world.env.update(
        HOSTILE_USER=USER, HOSTILE_PASSWORD=PASSWORD, GITHUB_STEP_SUMMARY=str(world.root / "summary.md")
    )
    host = {"realm": "tls.test", "echo403": "echo.test", "echo500": "echo.test"}
    entries = "".join(
        textwrap.dedent(f"""
          - source: {host.get(name, "hostile.test")}/{name}
            name: {name}
            match: '^2\\.'
        """)
        for name in [*FAILING, *QUIET]
    )
    world.images("images:\n  - source: alpine\n    tags: ['3.20']\n" + textwrap.indent(entries, "  "))
    return alpine


def _assert_nothing_leaked(world, *outputs: str) -> None:
    kept = [
        p.read_text(errors="replace")
        for p in world.root.rglob("*")
        if p.is_file() and p.suffix in (".md", ".yaml", ".json")
    ]
    for text in [*outputs, *kept]:
        assert PASSWORD not in text and BASIC not in text
    assert "Traceback" not in "".join(outputs)


def test_a_hostile_upstream_fails_only_its_own_entries_and_leaks_nothing(world, hostile):
    alpine = _hostile_world(world, hostile)
    proc = world.run("--registry-timeout", "3", expect=1)
    out = proc.stdout
    for name, said in FAILING.items():
        line = next((x for x in out.splitlines() if x.startswith(f"- error in {name}: ")), "")
        assert re.search(said, line), f"{name}: {line or 'not reported'}\n{out}\n{proc.stderr}"
    for name in QUIET:
        assert f"error in {name}:" not in out
    # The junk list: its one tag kept, the rest named once, escaped and cut.
    warnings = [x for x in proc.stderr.splitlines() if "warning: the tag list" in x]
    assert len(warnings) == 1, proc.stderr
    assert warnings[0].startswith(
        "junk: warning: the tag list of hostile.test/junk holds 8 "
        "entries that are not a tag, ignored: 7, null, "
        "'<img src=x onerror=alert(1)>'"
    ), warnings
    assert "and 3 more" in warnings[0] and "'a\\nb'" in warnings[0]
    assert world.record("alpine", "3.20").state is State.PROMOTED, proc.stderr
    assert assert_invariants(world) == {("alpine", "3.20"): alpine}
    # The echoes reached syncer (redacted above), and got no further.
    assert hostile["echo.test"].requests_to("echo403")[-1][2] == f"Basic {BASIC}"
    summary = (world.root / "summary.md").read_text()
    assert "error in echo500" in summary
    _assert_nothing_leaked(world, proc.stdout, proc.stderr, summary)
    # The Bearer challenge was chosen over Basic, and its token server never asked.
    assert not [s for s in hostile["tls.test"].seen if s[1].startswith("/token")]

    plan = world.syncer("plan", "--registry-timeout", "3")
    assert plan.returncode == 1, plan.stderr
    for name in FAILING:
        assert re.search(rf"^- {name}: ", plan.stdout, re.MULTILINE), plan.stdout
    _assert_nothing_leaked(world, plan.stdout, plan.stderr)


def test_huge_answers_are_refused_without_being_held(hostile):
    with RegistryClient(
        "hostile.test", endpoint=hostile["hostile.test"].host, tls_verify=False, max_retries=0
    ) as client:
        tracemalloc.start()
        try:
            for call in (lambda: client.list_tags("huge"), lambda: client.get_manifest("hugemanifest", "1")):
                with pytest.raises(RegistryError, match="larger than the 4 MiB"):
                    call()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peak < 16 << 20, f"{peak >> 20} MiB held for a refused answer"


def test_a_stalled_answer_ends_at_its_deadline(hostile):
    import time

    with RegistryClient(
        "hostile.test", endpoint=hostile["hostile.test"].host, tls_verify=False, deadline=2, max_retries=0
    ) as client:
        started = time.monotonic()
        with pytest.raises(RegistryError, match="too slowly"):
            client.list_tags("stall")
    assert time.monotonic() - started < 6
