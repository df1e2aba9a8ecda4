"""Loading and checking the catalog (syncer.catalog): one test per check, on broken copies of
the shipped example catalog. Every error must name file:line and say what to do."""

from __future__ import annotations

import shutil
import textwrap
import time
from datetime import date
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from syncer import catalog as catalog_module
from syncer.catalog import check_catalog, load_catalog
from syncer.core.model import Severity
from syncer.errors import CatalogError, Diagnostic

SHIPPED = Path(__file__).resolve().parents[2] / "catalog"
TODAY = date(2026, 12, 1)


@pytest.fixture
def cat(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the shipped catalog at ./catalog, so that locations read catalog/…"""
    root = tmp_path / "catalog"
    shutil.copytree(SHIPPED, root)
    monkeypatch.chdir(tmp_path)
    return root


def write(root: Path, files: dict[str, str | None]) -> None:
    """Writes (dedented) or, for None, deletes files under the catalog."""
    for relative, text in files.items():
        path = root / relative
        if text is None:
            path.unlink()
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(text).lstrip("\n"))


def replace(root: Path, relative: str, old: str, new: str) -> None:
    path = root / relative
    text = path.read_text()
    assert old in text, f"{old!r} not in {relative}"
    path.write_text(text.replace(old, new, 1))


def diagnostics(root: Path, files: dict[str, str | None] | None = None) -> list[Diagnostic]:
    write(root, files or {})
    return check_catalog(root, TODAY)[1]


def errors(root: Path, files: dict[str, str | None] | None = None) -> list[str]:
    return [str(d) for d in diagnostics(root, files) if d.level == "error"]


def one_error(root: Path, files: dict[str, str | None] | None = None) -> str:
    found = errors(root, files)
    assert len(found) == 1, found
    return found[0]


def image_file(body: str) -> dict[str, str | None]:
    """A team file with one image entry; the entry's first key is on line 2."""
    return {"images/team.yaml": "images:\n" + textwrap.indent(textwrap.dedent(body).strip(), "  ") + "\n"}


# --- the shipped catalog -------------------------------------------------------------------


def test_shipped_catalog_loads_into_the_model(cat: Path) -> None:
    catalog, found = check_catalog(cat, TODAY)
    assert found == []
    assert catalog is not None
    assert catalog.root == "catalog"
    assert catalog.settings.target.registry == "registry.example.com"
    assert catalog.settings.target.auth.password_env == "TARGET_PASSWORD"
    assert catalog.settings.sources["docker.io"].min_remaining_pulls == 20
    assert catalog.settings.content_admins == ("@acme/security",)
    names = {i.name: i for i in catalog.images}
    assert set(names) >= {"alpine", "nginx", "redis", "postgres", "python", "bitnami/redis"}
    assert names["python"].source == "docker.io/library/python"  # written as "python"
    assert names["bitnami/redis"].source == "docker.io/bitnami/redis"
    assert names["bitnami/redis"].policy == "lenient"
    assert names["nginx"].policy == "default"
    assert names["nginx"].location is not None and names["nginx"].location.file == "catalog/images/web.yaml"
    default = catalog.policies["default"]
    assert default.max == {Severity.CRITICAL: 0, Severity.HIGH: 0}
    assert default.ignore_unfixed and default.signers == ("ci",)
    assert catalog.policies["lenient"].max[Severity.HIGH] == 10
    assert catalog.exceptions[0].expires.year == 2027
    assert {g.name for g in catalog.access} == {"developers", "content-admins", "pipeline"}
    assert catalog.signers["ci"].startswith("-----BEGIN PUBLIC KEY-----")
    assert catalog.policy_for(names["nginx"]) is default


def test_load_catalog_raises_with_every_diagnostic(cat: Path) -> None:
    write(cat, {"policies/lenient.yaml": None})
    with pytest.raises(CatalogError) as err:
        load_catalog(cat)
    assert "policy 'lenient' is not defined in catalog/policies/" in str(err.value)
    assert [d.level for d in err.value.diagnostics] == ["error"]


def test_three_different_errors_are_reported_in_one_pass(cat: Path) -> None:
    replace(cat, "images/web.yaml", "newest: 3", "newest: three")
    replace(cat, "policies/lenient.yaml", "approval: auto", "approval: maybe")
    write(cat, {"approvals/approvals.yaml": "approvals:\n  - {image: nope, digest: sha256:1, by: x}\n"})
    found = errors(cat)
    assert any(e.startswith("catalog/images/web.yaml:7: error: 'newest'") for e in found)
    assert any(e.startswith("catalog/policies/lenient.yaml:5: error: 'approval'") for e in found)
    assert any(e.startswith("catalog/approvals/approvals.yaml:2: error: digest") for e in found)
    assert any("approval names image 'nope'" in e for e in found)
    assert len(found) == 4


# --- YAML and structure --------------------------------------------------------------------


def test_yaml_syntax_error_has_line_and_column(cat: Path) -> None:
    assert one_error(cat, {"images/team.yaml": "images:\n  - source: [nginx\n"}) == (
        "catalog/images/team.yaml:3: error: invalid YAML: expected ',' or ']', but got "
        "'<stream end>' (column 1); fix the syntax"
    )


def test_duplicate_key_is_an_error(cat: Path) -> None:
    assert one_error(
        cat,
        image_file("""
        - source: nginx
          tags: ["1"]
          tags: ["2"]
    """),
    ) == ("catalog/images/team.yaml:4: error: key 'tags' appears twice in the same mapping; keep one of them")


def test_impossible_date_is_reported_on_its_line(cat: Path) -> None:
    replace(cat, "exceptions/data.yaml", "expires: 2027-06-30", "expires: 2027-02-30")
    assert one_error(cat).startswith(
        "catalog/exceptions/data.yaml:5: error: invalid value: "
        "day is out of range for month; write dates as real"
    )


def test_file_that_is_not_a_mapping(cat: Path) -> None:
    assert one_error(cat, {"images/team.yaml": "- source: nginx\n"}) == (
        "catalog/images/team.yaml:1: error: must be a mapping with the keys images, "
        "not a list; see docs/catalog.md"
    )


def test_comment_only_files_are_fine(cat: Path) -> None:
    assert (
        diagnostics(cat, {"images/empty.yaml": "# nothing yet\n", "exceptions/none.yaml": "exceptions:\n"})
        == []
    )


def test_yml_extension_is_a_warning(cat: Path) -> None:
    found = diagnostics(cat, {"images/team.yml": "images: []\n"})
    assert [str(d) for d in found] == [
        "catalog/images/team.yml: warning: is ignored: catalog files end in .yaml; rename it"
    ]


def test_missing_catalog_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    catalog, found = check_catalog("nowhere", TODAY)
    assert catalog is None
    assert [str(d) for d in found] == [
        "nowhere: error: catalog directory not found; run syncer from the repository root "
        "or pass --catalog DIR"
    ]


def test_locations_outside_the_current_directory_are_absolute(
    cat: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = cat.parent / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    write(cat, {"policies/lenient.yaml": None})
    found = check_catalog(cat, TODAY)[1]
    assert found[0].location.file == f"{cat}/images/data.yaml"


# --- hostile input: the loader's bounds -----------------------------------------------------
# Each of these crashed or hung the loader before it had bounds (see catalog.MAX_*).


def cpu_seconds(action) -> tuple[object, float]:
    """``action()`` and the CPU time it took: wall time would measure the other tests' load."""
    start = time.process_time()
    result = action()
    return result, time.process_time() - start


def test_deep_bracket_nesting_is_refused_on_its_line(cat: Path) -> None:
    # Was RecursionError after 10 s of rescanning pending simple keys.
    deep = "[" * 3000 + "]" * 3000
    found, seconds = cpu_seconds(
        lambda: one_error(
            cat,
            image_file(f"""
        - source: nginx
          tags: {deep}
    """),
        )
    )
    assert found == (
        "catalog/images/team.yaml:3: error: nesting is deeper than 64 levels; a "
        "catalog file needs only a few, so close the open brackets or indents"
    )
    assert seconds < 1


def test_deep_block_nesting_is_refused_on_its_line(cat: Path) -> None:
    # Was RecursionError: block sequences nest one level per "- ".
    assert one_error(cat, {"access.yaml": "groups:\n  x:\n    " + "- " * 3000 + "a\n"}) == (
        "catalog/access.yaml:3: error: nesting is deeper than 64 levels; a catalog file needs "
        "only a few, so close the open brackets or indents"
    )


def bomb(levels: int) -> list[str]:
    """Anchors a0..a{levels}, each a list of nine aliases of the one before: 9**levels values."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return lines


def test_alias_bomb_is_refused_at_the_alias_that_crosses_the_bound(cat: Path) -> None:
    # As the value of a duplicate key it took 90 s and 5.5 GB: ruamel's duplicate-key message
    # prints the value, expanding every alias.
    text = "groups: {}\n" + "\n".join(bomb(7)) + "\ngroups: *a7\n"
    found, seconds = cpu_seconds(lambda: one_error(cat, {"access.yaml": text}))
    assert found == (
        "catalog/access.yaml:7: error: aliases expand to more than 100,000 values "
        "(an alias bomb?); write the values out or use fewer nested aliases"
    )
    assert seconds < 1


def test_recursive_alias_is_refused(cat: Path) -> None:
    assert one_error(cat, {"access.yaml": "groups: &g\n  devs:\n    <<: *g\n"}) == (
        "catalog/access.yaml:3: error: alias *g refers to a value that contains it (a "
        "recursive alias); write the value out instead"
    )


def test_ordinary_aliases_still_work(cat: Path) -> None:
    assert (
        diagnostics(
            cat,
            image_file("""
        - source: acme/tool
          tags: ["1"]
          platforms: &both [linux/amd64, linux/arm64]
        - source: acme/other
          tags: ["2"]
          platforms: *both
    """),
        )
        == []
    )


def test_file_beyond_the_size_limit_is_refused_at_that_line(cat: Path) -> None:
    # A multi-megabyte comment block inside an entry took ruamel superlinear time.
    comments = "".join(f"    # {i:07d} {'x' * 60}\n" for i in range(30_000))  # 2 MiB
    text = "images:\n  - source: nginx\n" + comments + "    tags: [a]\n"
    found, seconds = cpu_seconds(lambda: one_error(cat, {"images/team.yaml": text}))
    line = text.encode()[: catalog_module.MAX_FILE_BYTES].count(b"\n") + 1
    assert found == (
        f"catalog/images/team.yaml:{line}: error: the file goes beyond 64 KiB, the "
        "limit for one catalog file, on this line; split it into several files"
    )
    assert seconds < 1


def test_file_at_the_size_limit_loads_in_bounded_time(cat: Path) -> None:
    # The costliest shape for ruamel per byte found: one short flow item per line.
    text = "images:\n  - source: acme/big\n    tags: [\n"
    text += "a,\n" * ((catalog_module.MAX_FILE_BYTES - len(text) - 4) // 3) + "]\n"
    assert len(text.encode()) <= catalog_module.MAX_FILE_BYTES
    found, seconds = cpu_seconds(lambda: errors(cat, {"images/team.yaml": text}))
    assert found == []
    assert seconds < 5


def test_nul_byte_is_named_with_line_and_column(cat: Path) -> None:
    # Was "invalid YAML; fix the syntax" with no line.
    replace(cat, "images/web.yaml", 'tags: ["1.27.3"]', 'tags: ["1.27\x003"]')
    assert one_error(cat) == (
        "catalog/images/web.yaml:4: error: column 17 holds a NUL byte (U+0000), which YAML does "
        "not allow; remove it (is the file binary, or saved as UTF-16?)"
    )


def test_control_character_is_named_with_line_and_column(cat: Path) -> None:
    replace(cat, "policies/lenient.yaml", "approval: auto", "approval: au\x1bto")
    assert one_error(cat) == (
        "catalog/policies/lenient.yaml:5: error: column 13 holds a control character (U+001B), "
        "which YAML does not allow; remove it (is the file binary, or saved as UTF-16?)"
    )


def test_file_that_is_not_utf8_names_the_line_of_the_first_bad_byte(cat: Path) -> None:
    path = cat / "images" / "web.yaml"
    path.write_bytes(path.read_bytes().replace(b"Web tier", b"Web \xe9tage"))
    assert one_error(cat) == (
        "catalog/images/web.yaml:1: error: is not UTF-8 text: column 7 holds byte 0xe9; save it as UTF-8"
    )


def test_signers_that_is_not_a_list_is_an_error(cat: Path) -> None:
    # Was TypeError: 'int' object is not iterable.
    replace(cat, "policies/default.yaml", "signers: [ci]", "signers: 1")
    assert one_error(cat) == (
        "catalog/policies/default.yaml:9: error: 'signers' in policy "
        "'default' must be a list, e.g. signers: [ci], not a number"
    )


def test_number_beyond_the_conversion_limit_is_reported_on_its_line(cat: Path) -> None:
    # Was a ValueError about sys.set_int_max_str_digits, reported as a bad date on line 0.
    replace(cat, "policies/default.yaml", "max_age_days: 365", "max_age_days: " + "9" * 5000)
    assert one_error(cat) == (
        "catalog/policies/default.yaml:7: error: invalid value: more than 4300 digits; quote it if it is text"
    )


def test_value_an_explicit_tag_cannot_convert_is_reported_on_its_line(cat: Path) -> None:
    replace(cat, "policies/default.yaml", "max_age_days: 365", "max_age_days: !!int 1.5")
    assert one_error(cat) == (
        "catalog/policies/default.yaml:7: error: invalid value: invalid literal for int() with "
        "base 10: '1.5'; fix the value or quote it"
    )


def test_huge_public_key_file_is_refused_unread(cat: Path) -> None:
    with open(cat / "signers" / "ci.pub", "ab") as stream:
        stream.truncate(2**30)  # sparse: a GiB that read_bytes() would have held in memory
    found, seconds = cpu_seconds(lambda: one_error(cat))
    assert found == (
        "catalog/signers/ci.pub: error: is larger than 64 KiB; a public key is a "
        "few hundred bytes: write the one from 'syncer keygen ci'"
    )
    assert seconds < 1


def test_access_globs_with_many_stars_are_checked_in_bounded_time(cat: Path) -> None:
    # check_access matches push globs against pull globs; under Python's re this took minutes.
    access = (
        f"groups:\n  team:\n    members: [dev1]\n    pull: ['{'*a' * 12}*b']\n    push: ['{'a' * 200}']\n"
    )
    found, seconds = cpu_seconds(lambda: diagnostics(cat, {"access.yaml": access}))
    assert [d.level for d in found] == ["warning"]
    assert seconds < 2


# --- unknown keys and types ----------------------------------------------------------------


def test_misspelt_key_suggests_the_right_one(cat: Path) -> None:
    assert one_error(
        cat,
        image_file("""
        - source: acme/tool
          mach: '^1$'
          tags: ["1"]
    """),
    ) == ("catalog/images/team.yaml:3: error: unknown key 'mach' in image entry; did you mean 'match'?")


def test_unknown_key_without_close_match_lists_known_keys(cat: Path) -> None:
    replace(cat, "settings.yaml", "defaults:\n", "colour: blue\ndefaults:\n")
    assert one_error(cat) == (
        "catalog/settings.yaml:21: error: unknown key 'colour' in settings.yaml; remove it or "
        "use one of: target, sources, replicas, signing, defaults, content_admins, webhooks"
    )


def test_unknown_top_level_key(cat: Path) -> None:
    assert one_error(cat, {"images/team.yaml": "image:\n  - source: nginx\n"}) == (
        "catalog/images/team.yaml:1: error: unknown key 'image' in team.yaml; did you mean 'images'?"
    )


def test_string_where_a_list_is_expected(cat: Path) -> None:
    assert one_error(
        cat,
        image_file("""
        - source: acme/tool
          tags: "1.27.3"
    """),
    ) == (
        "catalog/images/team.yaml:3: error: 'tags' in image entry must be a list, "
        'e.g. tags: ["1.27.3"], not a string'
    )


def test_unquoted_version_tag_read_as_number(cat: Path) -> None:
    assert one_error(
        cat,
        image_file("""
        - source: acme/tool
          tags:
            - "1.27.3"
            - 1.10
    """),
    ) == (
        "catalog/images/team.yaml:5: error: item 1.1 in 'tags' of image entry is read "
        'by YAML as a number; quote it, e.g. tags: ["1.27.3"]'
    )


def test_bool_expected(cat: Path) -> None:
    replace(cat, "settings.yaml", "  tls_verify: true\n  auth", "  tls_verify: yes\n  auth")
    assert one_error(cat) == (
        "catalog/settings.yaml:7: error: 'tls_verify' in target must be true or false "
        "(YAML reads 'yes' as text), not a string"
    )


def test_int_expected(cat: Path) -> None:
    replace(cat, "settings.yaml", "min_remaining_pulls: 20", "min_remaining_pulls: '20'")
    assert one_error(cat) == (
        "catalog/settings.yaml:14: error: 'min_remaining_pulls' in source 'docker.io' must be "
        "a whole number >= 0, not a string"
    )


def test_mapping_expected(cat: Path) -> None:
    replace(cat, "settings.yaml", "defaults:\n  policy: default", "defaults: default")
    assert one_error(cat) == (
        "catalog/settings.yaml:21: error: 'defaults' in settings.yaml must be a mapping "
        "(key: value lines), not a string"
    )


# --- settings ------------------------------------------------------------------------------


def test_settings_file_missing(cat: Path) -> None:
    assert one_error(cat, {"settings.yaml": None}) == (
        "catalog/settings.yaml: error: is missing; create it with at least "
        "'target: {registry: HOST}' (see docs/catalog.md)"
    )


def test_target_registry_required(cat: Path) -> None:
    replace(cat, "settings.yaml", "  registry: registry.example.com\n", "")
    assert one_error(cat) == (
        "catalog/settings.yaml:3: error: target has no 'registry'; add 'registry: HOST[:PORT]',"
        " the trusted registry to promote into"
    )


def test_target_registry_without_scheme(cat: Path) -> None:
    replace(cat, "settings.yaml", "registry: registry.example.com", "registry: https://registry.example.com")
    assert one_error(cat) == (
        "catalog/settings.yaml:4: error: 'registry' must be HOST[:PORT] without a scheme; remove 'https://'"
    )


def test_quarantine_and_approved_must_differ(cat: Path) -> None:
    replace(cat, "settings.yaml", "approved: approved", "approved: quarantine")
    assert "'quarantine' and 'approved' must be different" in one_error(cat)


def test_env_names_are_checked_and_never_echoed(cat: Path) -> None:
    secret = "hunter2-secret!"
    replace(cat, "settings.yaml", "password_env: HUB_TOKEN", f"password_env: '{secret}'")
    message = one_error(cat)
    assert message.startswith(
        "catalog/settings.yaml:13: error: 'password_env' must be the name of an environment variable"
    )
    assert "never the secret itself" in message
    assert secret not in message


def test_auth_needs_both_variables(cat: Path) -> None:
    replace(
        cat,
        "settings.yaml",
        "auth: {username_env: HUB_USERNAME, password_env: HUB_TOKEN}",
        "auth: {username_env: HUB_USERNAME}",
    )
    assert one_error(cat) == (
        "catalog/settings.yaml:13: error: auth of source 'docker.io' names only one credential "
        "variable; add 'password_env'"
    )


def test_sources_normalise_hub_and_read_ca_dir(cat: Path) -> None:
    ca_dir = cat.parent / "certs" / "hub"
    ca_dir.mkdir(parents=True)
    replace(cat, "settings.yaml", "  docker.io:\n", f"  index.docker.io:\n    ca_dir: {ca_dir}\n")
    catalog, found = check_catalog(cat, TODAY)
    assert found == [] and catalog is not None
    assert catalog.settings.sources["docker.io"].ca_dir == str(ca_dir)


def test_replicas_are_read_and_checked(cat: Path) -> None:
    replace(
        cat,
        "settings.yaml",
        "signing:",
        "replicas:\n  - registry: eu.example.com:5000\n"
        "    auth: {username_env: EU_USER, password_env: EU_PASS}\n  - tls_verify: false\n"
        "signing:",
    )
    assert one_error(cat) == (
        "catalog/settings.yaml:19: error: replica has no 'registry'; add 'registry: HOST[:PORT]'"
    )
    replace(cat, "settings.yaml", "  - tls_verify: false\n", "")
    catalog = load_catalog(cat)
    assert catalog.settings.replicas[0].registry == "eu.example.com:5000"
    assert catalog.settings.replicas[0].auth.username_env == "EU_USER"


def test_content_admins_must_be_owners(cat: Path) -> None:
    replace(cat, "settings.yaml", '["@acme/security"]', '["acme security"]')
    assert one_error(cat) == (
        "catalog/settings.yaml:24: error: owner 'acme security' in 'content_admins' is not a "
        "GitHub owner; write @user, @org/team or an e-mail address"
    )


def test_pipeline_signer_needs_a_public_key(cat: Path) -> None:
    replace(cat, "settings.yaml", "signer: ci", "signer: release")
    assert one_error(cat) == (
        "catalog/settings.yaml:17: error: signer 'release' has no public key; add "
        "catalog/signers/release.pub (syncer keygen release) or remove the signer"
    )


def test_default_policy_must_exist(cat: Path) -> None:
    replace(cat, "settings.yaml", "policy: default", "policy: strict")
    assert one_error(cat) == (
        "catalog/settings.yaml:22: error: policy 'strict' is not defined in catalog/policies/; "
        "define catalog/policies/strict.yaml or use one of: default, lenient"
    )


# --- images --------------------------------------------------------------------------------


def test_image_source_required(cat: Path) -> None:
    assert one_error(cat, image_file("- tags: ['1']")) == (
        "catalog/images/team.yaml:2: error: image entry has no 'source'; add "
        "'source: docker.io/library/NAME', the upstream repository"
    )


def test_image_source_checked_against_the_grammar(cat: Path) -> None:
    assert one_error(cat, image_file("- {source: docker.io/library/NGINX, tags: ['1']}")) == (
        "catalog/images/team.yaml:2: error: source 'docker.io/library/NGINX' is not a valid "
        "image reference: repository path 'library/NGINX' must be lowercase; write it like "
        "docker.io/library/nginx or bitnami/redis"
    )


def test_image_source_must_not_carry_a_tag(cat: Path) -> None:
    assert one_error(cat, image_file("- {source: 'nginx:1.27', tags: ['1']}")) == (
        "catalog/images/team.yaml:2: error: source 'nginx:1.27' includes tag '1.27'; write "
        "source: docker.io/library/nginx and list tags under 'tags' (digests are resolved by "
        "the pipeline)"
    )


def test_image_source_must_not_carry_a_digest(cat: Path) -> None:
    digest = "sha256:" + "0" * 64
    assert "includes a digest; write source: docker.io/library/nginx" in one_error(
        cat, image_file(f"- {{source: 'nginx@{digest}', tags: ['1']}}")
    )


def test_image_source_is_normalised(cat: Path) -> None:
    write(cat, image_file("- {source: 'index.docker.io/acme/tool', tags: ['1']}"))
    catalog = load_catalog(cat)
    tool = catalog.image("acme/tool")
    assert tool is not None and tool.source == "docker.io/acme/tool"
    assert tool.source_host == "docker.io" and tool.source_path == "acme/tool"


def test_tags_follow_the_tag_grammar(cat: Path) -> None:
    assert one_error(
        cat,
        image_file("""
        - source: acme/tool
          tags: ["1.27", ".hidden"]
    """),
    ) == (
        "catalog/images/team.yaml:3: error: tag '.hidden' is invalid: up to 128 letters, "
        "digits, '_', '.' or '-', not starting with '.' or '-'"
    )


def test_tags_or_match_required(cat: Path) -> None:
    assert one_error(cat, image_file("- source: acme/tool")) == (
        "catalog/images/team.yaml:2: error: image entry has neither 'tags' nor 'match'; list "
        "tags, e.g. tags: [\"1.27.3\"], or give a match regex, e.g. match: '^1\\.27\\.\\d+$'"
    )


RE2_REMEDY = (
    "; fix the pattern (RE2 syntax: no backreferences or lookaround, so that "
    "matching takes linear time; see docs/catalog.md)"
)


def test_match_regex_must_compile(cat: Path) -> None:
    assert one_error(
        cat,
        image_file("""
        - source: acme/tool
          match: '^1\\.(27'
    """),
    ) == (
        "catalog/images/team.yaml:3: error: 'match' regex '^1\\.(27' is refused: "
        "missing ): ^1\\.(27" + RE2_REMEDY
    )


def test_exclude_regexes_must_compile(cat: Path) -> None:
    assert one_error(
        cat,
        image_file("""
        - source: acme/tool
          match: '.*'
          exclude:
            - '-rc'
            - '[abc'
    """),
    ) == (
        "catalog/images/team.yaml:6: error: 'exclude' regex '[abc' is refused: missing ]: [abc" + RE2_REMEDY
    )


def test_backreference_is_refused_with_the_re2_reason(cat: Path) -> None:
    # Validated before, and then could make discovery backtrack for minutes on one tag.
    assert one_error(
        cat,
        image_file("""
        - source: acme/tool
          match: '^(\\d+)\\.\\1$'
    """),
    ) == (
        "catalog/images/team.yaml:3: error: 'match' regex '^(\\d+)\\.\\1$' is refused: "
        "invalid escape sequence: \\1" + RE2_REMEDY
    )


def test_lookaround_in_exclude_is_refused(cat: Path) -> None:
    assert one_error(
        cat,
        image_file("""
        - source: acme/tool
          match: '.*'
          exclude: ['rc(?!1)']
    """),
    ) == (
        "catalog/images/team.yaml:4: error: 'exclude' regex 'rc(?!1)' is refused: "
        "invalid perl operator: (?!" + RE2_REMEDY
    )


def test_repetition_beyond_any_bound_is_refused(cat: Path) -> None:
    # Was OverflowError from Python's re.
    assert one_error(
        cat,
        image_file("""
        - source: acme/tool
          match: 'a{99999999999}'
    """),
    ).startswith(
        "catalog/images/team.yaml:3: error: 'match' regex 'a{99999999999}' is "
        "refused: '{' at position 1 starts no repetition {n}, {n,} or {n,m}"
    )


def test_nested_quantifiers_are_accepted_since_re2_does_not_backtrack(cat: Path) -> None:
    assert (
        errors(
            cat,
            image_file("""
        - source: acme/tool
          match: '^(a+)+$'
    """),
        )
        == []
    )


def test_newest_is_a_positive_int(cat: Path) -> None:
    assert (
        one_error(
            cat,
            image_file("""
        - source: acme/tool
          match: '.*'
          newest: 0
    """),
        )
        == "catalog/images/team.yaml:4: error: 'newest' in image entry must be >= 1, not 0"
    )


def test_exclude_and_newest_without_match_warn(cat: Path) -> None:
    found = diagnostics(
        cat,
        image_file("""
        - source: acme/tool
          tags: ["1"]
          newest: 2
    """),
    )
    assert [str(d) for d in found] == [
        "catalog/images/team.yaml:4: warning: 'newest' only filters tags found by 'match', "
        "and this entry has none; add 'match' or remove it"
    ]


def test_platforms_look_like_os_arch(cat: Path) -> None:
    assert one_error(
        cat,
        image_file("""
        - source: acme/tool
          tags: ["1"]
          platforms: [linux/arm64/v8, amd64]
    """),
    ) == (
        "catalog/images/team.yaml:4: error: platform 'amd64' is not os/arch[/variant]; "
        "write it like linux/amd64 or linux/arm64/v8"
    )


def test_image_policy_must_exist(cat: Path) -> None:
    assert one_error(
        cat,
        image_file("""
        - source: nginx
          name: edge/nginx
          tags: ["1"]
          policy: strict
    """),
    ) == (
        "catalog/images/team.yaml:5: error: policy 'strict' is not defined in "
        "catalog/policies/; define catalog/policies/strict.yaml or use one of: default, "
        "lenient"
    )


def test_owners_must_be_github_owners(cat: Path) -> None:
    assert "owner 'web team' in 'owners' is not a GitHub owner" in one_error(
        cat, image_file("- {source: nginx, name: x, tags: ['1'], owners: ['web team']}")
    )


@pytest.mark.parametrize(
    "name, reason",
    [
        ("../etc", "name '../etc' contains a '.' or '..' segment"),
        ("/abs", "name '/abs' is an absolute path; write it without the leading '/'"),
        ("a//b", "name 'a//b' has an empty path segment ('//' or a trailing '/')"),
        ("Web", "name 'Web' must be lowercase"),
    ],
)
def test_names_must_be_safe_paths(cat: Path, name: str, reason: str) -> None:
    assert one_error(
        cat,
        image_file(f"""
        - source: nginx
          tags: ["1"]
          name: '{name}'
    """),
    ) == (
        f"catalog/images/team.yaml:4: error: {reason}; image names become paths under "
        "reports/ and repositories under quarantine/ and approved/, so set 'name' to a "
        "lowercase repository path"
    )


def test_names_are_unique_across_files(cat: Path) -> None:
    assert one_error(
        cat,
        image_file("""
        - source: ghcr.io/acme/nginx
          name: nginx
          tags: ["1"]
    """),
    ) == (
        "catalog/images/web.yaml:3: error: name 'nginx' is already used by "
        "ghcr.io/acme/nginx at catalog/images/team.yaml:2; give one of them a different "
        "'name'"
    )


def test_duplicate_source_and_name(cat: Path) -> None:
    assert one_error(cat, image_file("- {source: docker.io/library/postgres, tags: ['15']}")) == (
        "catalog/images/team.yaml:2: error: docker.io/library/postgres is listed twice as "
        "'postgres' (also at catalog/images/data.yaml:3); merge the two entries into one"
    )


# --- policies ------------------------------------------------------------------------------


def policy(text: str) -> dict[str, str | None]:
    return {"policies/lenient.yaml": text}


def test_policy_severity_keys_suggested(cat: Path) -> None:
    assert one_error(cat, policy("vulnerabilities:\n  max: {critical: 0, hihg: 3}\n")) == (
        "catalog/policies/lenient.yaml:2: error: unknown key 'hihg' in vulnerabilities.max of "
        "policy 'lenient'; did you mean 'high'?"
    )


def test_policy_counts_are_non_negative_ints(cat: Path) -> None:
    found = errors(cat, policy("vulnerabilities:\n  max:\n    critical: -1\n    low: many\n"))
    assert found == [
        "catalog/policies/lenient.yaml:3: error: 'critical' in vulnerabilities.max of policy "
        "'lenient' must be >= 0, not -1",
        "catalog/policies/lenient.yaml:4: error: 'low' in vulnerabilities.max of policy "
        "'lenient' must be a whole number >= 0, not a string",
    ]


def test_policy_ignore_unfixed_is_bool(cat: Path) -> None:
    assert "'ignore_unfixed' in vulnerabilities of policy 'lenient' must be true or false" in one_error(
        cat, policy("vulnerabilities:\n  ignore_unfixed: 1\n")
    )


def test_policy_license_deny_is_a_list(cat: Path) -> None:
    assert one_error(cat, policy("licenses:\n  deny: AGPL-3.0-only\n")) == (
        "catalog/policies/lenient.yaml:2: error: 'deny' in licenses of policy 'lenient' must "
        "be a list, e.g. deny: [AGPL-3.0-only], not a string"
    )


def test_policy_max_age_days_positive(cat: Path) -> None:
    assert one_error(cat, policy("max_age_days: 0\n")) == (
        "catalog/policies/lenient.yaml:1: error: 'max_age_days' in policy 'lenient' must be >= 1, not 0"
    )


def test_policy_approval_and_on_regression_are_choices(cat: Path) -> None:
    assert errors(cat, policy("approval: sometimes\non_regression: delete\n")) == [
        "catalog/policies/lenient.yaml:1: error: 'approval' in policy 'lenient' must be one "
        "of auto, manual, not 'sometimes'",
        "catalog/policies/lenient.yaml:2: error: 'on_regression' in policy 'lenient' must be "
        "one of flag, demote, not 'delete'",
    ]


def test_policy_signers_need_public_keys(cat: Path) -> None:
    assert one_error(cat, policy('signers:\n  - ci\n  - security\nteams: ["@acme/data"]\n')) == (
        "catalog/policies/lenient.yaml:3: error: signer 'security' has no public key; add "
        "catalog/signers/security.pub (syncer keygen security) or remove the signer"
    )


def test_policy_signer_names_cannot_be_paths(cat: Path) -> None:
    assert one_error(cat, policy("signers: [../ci]\n")).startswith(
        "catalog/policies/lenient.yaml:1: error: signer name '../ci' is invalid"
    )


def test_empty_policy_fails_closed(cat: Path) -> None:
    assert one_error(cat, policy("# nothing\n")) == (
        "catalog/policies/lenient.yaml:1: error: is empty; a policy must say what it allows, "
        "e.g. 'vulnerabilities: {max: {critical: 0}}'"
    )


def test_policy_name_is_the_file_stem(cat: Path) -> None:
    write(cat, {"policies/edge.yaml": "approval: manual\n"})
    assert load_catalog(cat).policies["edge"].approval == "manual"


# --- signers -------------------------------------------------------------------------------


def test_signer_key_must_be_a_pem_public_key(cat: Path) -> None:
    assert one_error(cat, {"signers/ci.pub": "not a key\n"}) == (
        "catalog/signers/ci.pub: error: is not a PEM public key; replace it with the public "
        "half written by 'syncer keygen ci'"
    )


def test_private_keys_are_refused(cat: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    found = errors(cat, {"signers/ci.pub": pem, "signers/ci.key": pem})
    assert found == [
        "catalog/signers/ci.key: error: a private key file is inside the catalog; delete it, "
        "rotate the key, and commit only the public half (signers/NAME.pub)",
        "catalog/signers/ci.pub: error: contains a private key; delete it, rotate the key, "
        "and commit only the public half",
    ]


# --- exceptions ----------------------------------------------------------------------------


def test_expired_exception_is_a_warning(cat: Path) -> None:
    replace(cat, "exceptions/data.yaml", "expires: 2027-06-30", "expires: 2026-10-01")
    catalog, found = check_catalog(cat, TODAY)
    assert catalog is not None
    assert [str(d) for d in found] == [
        "catalog/exceptions/data.yaml:5: warning: exception for CVE-2024-45491 expired on "
        "2026-10-01 and no longer applies; remove it or extend it"
    ]


def test_exception_expiring_today_still_applies(cat: Path) -> None:
    assert check_catalog(cat, date(2027, 6, 30))[1] == []


def test_exception_pattern_matching_nothing_is_a_warning(cat: Path) -> None:
    replace(cat, "exceptions/data.yaml", '"redis*"', '"redsi*"')
    assert [str(d) for d in diagnostics(cat)] == [
        "catalog/exceptions/data.yaml:4: warning: 'redsi*' matches no image in the catalog; "
        "fix the name or remove it"
    ]


@pytest.mark.parametrize(
    "key, remedy",
    [
        ("vulnerability", "add 'vulnerability: CVE-…', the id Trivy reports"),
        ("images", "add 'images: [NAME, …]', the catalog names (globs allowed) it applies to"),
        ("expires", "add 'expires: YYYY-MM-DD'; every exception must end"),
        ("reason", "add 'reason: …', why the risk is accepted"),
    ],
)
def test_exception_required_keys(cat: Path, key: str, remedy: str) -> None:
    path = cat / "exceptions/data.yaml"
    lines = [
        line
        for line in path.read_text().splitlines()
        if not line.strip().startswith(f"{key}:") and not line.strip().startswith(f"- {key}:")
    ]
    text = "\n".join(lines) + "\n"
    if key == "vulnerability":
        text = text.replace("    images:", "  - images:")
    path.write_text(text)
    assert one_error(cat) == f"catalog/exceptions/data.yaml:3: error: exception has no '{key}'; {remedy}"


def test_exception_expires_must_be_a_date(cat: Path) -> None:
    replace(cat, "exceptions/data.yaml", "expires: 2027-06-30", "expires: next year")
    assert one_error(cat) == (
        "catalog/exceptions/data.yaml:5: error: 'expires' in exception "
        "must be a date written YYYY-MM-DD, not a string"
    )


# --- approvals -----------------------------------------------------------------------------


def approvals(*entries: str) -> dict[str, str | None]:
    return {"approvals/approvals.yaml": "approvals:\n" + "".join(f"  - {e}\n" for e in entries)}


def test_approval_is_read(cat: Path) -> None:
    digest = "sha256:" + "a" * 64
    write(cat, approvals(f"{{image: nginx, digest: '{digest}', by: '@alice', reason: ok}}"))
    approval = load_catalog(cat).approvals[0]
    assert (approval.image, approval.digest, approval.by, approval.reason) == (
        "nginx",
        digest,
        "@alice",
        "ok",
    )


def test_approval_digest_well_formed(cat: Path) -> None:
    assert one_error(cat, approvals("{image: nginx, digest: 'sha256:ABC', by: '@alice'}")) == (
        "catalog/approvals/approvals.yaml:2: error: digest 'sha256:ABC' is not sha256: followed "
        "by 64 lowercase hex digits; copy it from the image's report"
    )


def test_approval_image_must_exist(cat: Path) -> None:
    digest = "sha256:" + "a" * 64
    assert one_error(cat, approvals(f"{{image: ngnix, digest: '{digest}', by: '@alice'}}")) == (
        "catalog/approvals/approvals.yaml:2: error: approval names image 'ngnix', which is not "
        "in the catalog; did you mean 'nginx'?"
    )


@pytest.mark.parametrize(
    "missing, remedy",
    [
        ("image", "add 'image: NAME', the catalog name it approves"),
        ("digest", "add 'digest: sha256:…', the exact digest approved"),
        ("by", "add 'by: \"@user\"', who approved it"),
    ],
)
def test_approval_required_keys(cat: Path, missing: str, remedy: str) -> None:
    fields = {"image": "nginx", "digest": "'sha256:" + "a" * 64 + "'", "by": "'@alice'"}
    del fields[missing]
    entry = "{" + ", ".join(f"{k}: {v}" for k, v in fields.items()) + "}"
    assert one_error(cat, approvals(entry)) == (
        f"catalog/approvals/approvals.yaml:2: error: approval has no '{missing}'; {remedy}"
    )


# --- access --------------------------------------------------------------------------------


def test_access_members_must_be_a_list(cat: Path) -> None:
    replace(cat, "access.yaml", "members: [dev1, dev2]", "members: dev1")
    assert one_error(cat) == (
        "catalog/access.yaml:4: error: 'members' in group 'developers' "
        "must be a list, e.g. members: [dev1, dev2], not a string"
    )


def test_access_globs_restricted(cat: Path) -> None:
    replace(cat, "access.yaml", 'pull: ["approved/*"]', 'pull: ["approved/[a-z]*"]')
    assert one_error(cat) == (
        "catalog/access.yaml:5: error: 'pull' pattern 'approved/[a-z]*' may only contain "
        "lowercase letters, digits, '.', '_', '-', '/' and '*'"
    )


def test_access_unknown_key(cat: Path) -> None:
    replace(cat, "access.yaml", "    push:", "    pushh:")
    assert one_error(cat) == (
        "catalog/access.yaml:12: error: unknown key 'pushh' in group 'pipeline'; did you mean 'push'?"
    )


# --- extension and scale -------------------------------------------------------------------


def test_extra_checks_plug_into_checks(cat: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_python(draft: catalog_module.Draft, today: date) -> list[Diagnostic]:
        return [
            Diagnostic(i.where("source"), "python is not allowed here")
            for i in draft.images
            if i.value.name == "python"
        ]

    monkeypatch.setattr(catalog_module, "CHECKS", [*catalog_module.CHECKS, no_python])
    assert one_error(cat) == "catalog/images/base.yaml:10: error: python is not allowed here"


def test_five_thousand_tags_over_many_files_load(cat: Path) -> None:
    shipped = sum(len(i.tags) for i in load_catalog(cat).images)
    for team in range(50):
        entries = []
        for image in range(10):
            tags = ", ".join(f'"1.{n}.{team}"' for n in range(10))
            entries.append(f"  - source: docker.io/team{team}/app{image}\n    tags: [{tags}]\n")
        write(cat, {f"images/team{team}.yaml": "images:\n" + "".join(entries)})
    started = time.monotonic()
    catalog = load_catalog(cat)
    elapsed = time.monotonic() - started
    assert sum(len(i.tags) for i in catalog.images) == shipped + 5000
    print(f"loaded 5,000 tags in {elapsed:.2f}s")


def test_access_member_must_be_a_user_name(cat: Path) -> None:
    replace(cat, "access.yaml", "members: [dev1, dev2]", 'members: [dev1, "dev 2"]')
    assert one_error(cat) == (
        "catalog/access.yaml:4: error: group 'developers' lists 'dev 2', which "
        "is not a user name (no spaces or ':'); use the name people log in with"
    )


def test_access_push_without_pull_and_anonymous_members_are_warnings(cat: Path) -> None:
    replace(cat, "access.yaml", 'pull: ["*"]\n    push: ["*"]', 'pull: ["quarantine/*"]\n    push: ["*"]')
    write(
        cat,
        {
            "access.yaml": (cat / "access.yaml").read_text()
            + '  anonymous:\n    members: [someone]\n    pull: ["approved/*"]\n'
        },
    )
    found = [str(d) for d in diagnostics(cat)]
    assert found == [
        "catalog/access.yaml:12: warning: 'syncer' may push * (group 'pipeline') but not pull it, and a "
        "registry checks both on every push: add the pattern to 'pull' too",
        "catalog/access.yaml:14: warning: group 'anonymous' applies to everyone, logged in or not; "
        "its members are ignored: remove them",
    ], found


def test_access_push_covered_by_another_group_or_anonymous_pull_is_fine(cat: Path) -> None:
    write(
        cat,
        {
            "access.yaml": """
        groups:
          readers: {members: [bot], pull: ["approved/*"]}
          writers: {members: [bot], push: ["approved/app"]}
          anonymous: {pull: ["public/*"]}
          publishers: {members: [pub], push: ["public/x"]}
    """
        },
    )
    assert [str(d) for d in diagnostics(cat)] == []


def test_source_concurrency_is_read_and_defaults_to_unset(cat: Path) -> None:
    assert load_catalog(cat).settings.sources["docker.io"].concurrency is None
    replace(cat, "settings.yaml", "min_remaining_pulls: 20", "min_remaining_pulls: 20\n    concurrency: 8")
    assert load_catalog(cat).settings.sources["docker.io"].concurrency == 8


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "'concurrency' in source 'docker.io' must be >= 1, not 0"),
        (
            "65",
            "'concurrency' in source 'docker.io' must be at most 64, not 65: more requests in "
            "flight gain nothing and a registry's rate limiter counts them against us",
        ),
        ("'8'", "'concurrency' in source 'docker.io' must be a whole number >= 1, not a string"),
    ],
)
def test_source_concurrency_out_of_range_is_an_error_with_its_line(
    cat: Path, value: str, message: str
) -> None:
    replace(
        cat, "settings.yaml", "min_remaining_pulls: 20", f"min_remaining_pulls: 20\n    concurrency: {value}"
    )
    assert one_error(cat) == f"catalog/settings.yaml:15: error: {message}"


# --- who may choose a policy ---------------------------------------------------------------


def test_a_team_cannot_move_its_image_to_a_policy_not_open_to_it(cat: Path) -> None:
    """web.yaml is owned by @acme/web and the admins, and GitHub takes either's review: so
    web choosing `lenient` (open to @acme/data only) is refused at the `policy:` line."""
    replace(
        cat, "images/web.yaml", '    owners: ["@acme/web"]', '    owners: ["@acme/web"]\n    policy: lenient'
    )
    assert one_error(cat) == (
        "catalog/images/web.yaml:10: error: policy 'lenient' is not open to @acme/web, who owns "
        "catalog/images/web.yaml and could approve this change without the content admins; a "
        "content admin adds them to 'teams' in catalog/policies/lenient.yaml, or remove "
        "'policy' to use the default"
    )
    # The content admins open it (in policies/, which only they own): then it is valid.
    replace(cat, "policies/lenient.yaml", 'teams: ["@acme/data"]', 'teams: ["@acme/data", "@acme/web"]')
    assert errors(cat) == []


def test_every_owner_of_the_file_must_be_allowed_the_policy(cat: Path) -> None:
    """Any owner of a file can approve a change to any entry in it."""
    replace(
        cat,
        "images/data.yaml",
        """    owners: ["@acme/data"]

  - source: bitnami/redis""",
        """    owners: ["@acme/data", "@acme/web"]

  - source: bitnami/redis""",
    )
    assert errors(cat) == [
        "catalog/images/data.yaml:18: error: policy 'lenient' is not open to @acme/web, who owns "
        "catalog/images/data.yaml and could approve this change without the content admins; a "
        "content admin adds them to 'teams' in catalog/policies/lenient.yaml, or remove "
        "'policy' to use the default"
    ]


def test_the_default_policy_and_admin_owned_files_need_no_teams(cat: Path) -> None:
    replace(
        cat, "images/web.yaml", '    owners: ["@acme/web"]', '    owners: ["@acme/web"]\n    policy: default'
    )
    # An image file without owners belongs to the content admins alone.
    assert errors(cat, image_file("- source: busybox\n  tags: ['1.36']\n  policy: lenient")) == []


def test_policy_teams_are_owners(cat: Path) -> None:
    replace(cat, "policies/lenient.yaml", 'teams: ["@acme/data"]', 'teams: ["acme data"]')
    assert errors(cat)[0].startswith(
        "catalog/policies/lenient.yaml:9: error: owner 'acme data' in 'teams' is not a GitHub owner"
    )


def test_an_exception_matching_no_image_is_an_error(cat: Path) -> None:
    """It excepts nothing: the pull request does not do what its reviewers were told."""
    replace(cat, "exceptions/data.yaml", '["postgres", "redis*"]', '["postgress", "redsi*"]')
    assert errors(cat) == [
        "catalog/exceptions/data.yaml:4: error: exception for CVE-2024-45491 matches no image "
        "in the catalog ('postgress', 'redsi*'); fix the names or remove the exception"
    ]


# --- webhooks ------------------------------------------------------------------------------


def test_webhooks_are_read_and_checked(cat: Path) -> None:
    settings = cat / "settings.yaml"
    settings.write_text(
        settings.read_text()
        + textwrap.dedent("""
        webhooks:
          - url_env: SLACK_WEBHOOK_URL
            events: [held, failed]
          - url_env: https://hooks.slack.example/services/T0/B0/s3cret
            events: [held, mirrored]
    """)
    )
    found = errors(cat)
    assert found == [
        "catalog/settings.yaml:29: error: 'url_env' must be the name of an environment variable "
        "(letters, digits and '_', not starting with a digit) that holds the secret, never the "
        "secret itself",
        "catalog/settings.yaml:30: error: webhook event 'mirrored' is not one of promoted, held, "
        "flagged, demoted, failed",
    ]
    assert not any("s3cret" in e for e in found)
    settings.write_text(
        settings.read_text()
        .replace("url_env: https://hooks.slack.example/services/T0/B0/s3cret", "url_env: OTHER")
        .replace("[held, mirrored]", "[promoted]")
    )
    catalog, _ = check_catalog(cat, TODAY)
    assert catalog is not None
    assert [(w.url_env, w.events) for w in catalog.settings.webhooks] == [
        ("SLACK_WEBHOOK_URL", ("held", "failed")),
        ("OTHER", ("promoted",)),
    ]
