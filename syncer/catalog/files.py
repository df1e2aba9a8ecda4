"""Reading each catalog file on its own into ``Located`` values: settings, images, policies,
exceptions, approvals, access groups, signers."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.serialization import load_pem_public_key

from syncer.catalog.reader import _MISSING, MAX_FILE_BYTES, Located, _Map, _Reader, _Sink, display_path
from syncer.core.model import (
    APPROVAL_MODES,
    REGRESSION_ACTIONS,
    UNASSESSED_ACTIONS,
    WEBHOOK_EVENTS,
    AccessGroup,
    Approval,
    Auth,
    ImageEntry,
    Location,
    Policy,
    RegistryEndpoint,
    Settings,
    Severity,
    Signing,
    Source,
    Target,
    VulnException,
    Webhook,
)
from syncer.core.refs import (
    DOCKER_HUB,
    is_sha256_digest,
    is_valid_domain,
    is_valid_repository_path,
    is_valid_tag,
    parse_reference,
    safe_relpath,
)
from syncer.core.selection import PatternError, compile_pattern
from syncer.tools.trust import cert_dirs, problems

_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


_PLATFORM_RE = re.compile(r"[a-z0-9]+/[a-z0-9_]+(?:/[a-z0-9]+)?")


# CODEOWNERS accepts @user, @org/team and e-mail addresses.
_OWNER_RE = re.compile(
    r"@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:/[A-Za-z0-9][A-Za-z0-9._-]*)?"
    r"|[^@\s]+@[^@\s]+\.[^@\s]+"
)


# Signer names become file names under signers/, so no separators or leading dots.
_SIGNER_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


_REPO_GLOB_RE = re.compile(r"[a-z0-9._/*-]+")


_SEVERITIES = tuple(s.key for s in sorted(Severity, reverse=True))


def is_valid_signer_name(name: str) -> bool:
    return _SIGNER_NAME_RE.fullmatch(name) is not None


@dataclass
class Draft:
    """Everything read from the catalog files, before the cross-file checks."""

    root: Path
    root_display: str
    settings: Located[Settings] | None = None
    images: list[Located[ImageEntry]] = field(default_factory=list)
    policies: dict[str, Located[Policy]] = field(default_factory=dict)
    exceptions: list[Located[VulnException]] = field(default_factory=list)
    approvals: list[Located[Approval]] = field(default_factory=list)
    access: list[Located[AccessGroup]] = field(default_factory=list)
    signers: dict[str, str] = field(default_factory=dict)  # name -> PEM, only keys that parse
    signer_files: set[str] = field(default_factory=set)  # every signers/<name>.pub present
    broken_policies: set[str] = field(default_factory=set)  # policy files with errors of their own

    def path(self, *parts: str) -> str:
        return "/".join((self.root_display, *parts))


def _yaml_files(directory: Path, sink: _Sink) -> list[Path]:
    if not directory.is_dir():
        return []
    for stray in sorted(directory.glob("*.yml")):
        sink.warning(Location(display_path(stray), 0), "is ignored: catalog files end in .yaml; rename it")
    return sorted(p for p in directory.glob("*.yaml") if p.is_file())


def _read_all(draft: Draft, reader: _Reader) -> None:
    sink = reader.sink
    _read_signers(draft, sink)
    settings_path = draft.root / "settings.yaml"
    if settings_path.is_file():
        doc = reader.document(settings_path, _SETTINGS_KEYS, "settings.yaml")
        draft.settings = _read_settings(doc)
    else:
        sink.error(
            Location(draft.path("settings.yaml"), 0),
            "is missing; create it with at least 'target: {registry: HOST}' (see docs/catalog.md)",
        )
    default_policy = draft.settings.value.default_policy if draft.settings else "default"

    for path in _yaml_files(draft.root / "images", sink):
        doc = reader.document(path, ("images",), path.name)
        if doc is not None:
            for entry in doc.maps("images", "image entry", example="images: [{source: nginx}]"):
                image = _read_image(entry, default_policy)
                if image is not None:
                    draft.images.append(image)

    for path in _yaml_files(draft.root / "policies", sink):
        errors_before = sum(d.level == "error" for d in sink.items)
        doc = reader.document(path, _POLICY_KEYS, f"policy '{path.stem}'")
        if doc is not None and not doc.data:
            # Fail closed: a policy without rules would promote everything.
            sink.error(
                doc.loc(),
                "is empty; a policy must say what it allows, e.g. 'vulnerabilities: {max: {critical: 0}}'",
            )
        # Recorded even when broken, so that images using it are not reported a second time.
        draft.policies[path.stem] = (
            _read_policy(doc, path.stem)
            if doc is not None
            else Located(Policy(path.stem), {"": Location(display_path(path), 0)})
        )
        if sum(d.level == "error" for d in sink.items) > errors_before:
            draft.broken_policies.add(path.stem)

    for path in _yaml_files(draft.root / "exceptions", sink):
        doc = reader.document(path, ("exceptions",), path.name)
        if doc is not None:
            for entry in doc.maps(
                "exceptions", "exception", example="exceptions: [{vulnerability: CVE-…, …}]"
            ):
                exception = _read_exception(entry)
                if exception is not None:
                    draft.exceptions.append(exception)

    for path in _yaml_files(draft.root / "approvals", sink):
        doc = reader.document(path, ("approvals",), path.name)
        if doc is not None:
            for entry in doc.maps(
                "approvals", "approval", example="approvals: [{image: nginx, digest: sha256:…}]"
            ):
                approval = _read_approval(entry)
                if approval is not None:
                    draft.approvals.append(approval)

    access_path = draft.root / "access.yaml"
    if access_path.is_file():
        doc = reader.document(access_path, ("groups",), "access.yaml")
        if doc is not None:
            draft.access = _read_access(doc)


_AUTH_KEYS = ("username_env", "password_env")


_TARGET_KEYS = ("registry", "quarantine", "approved", "tls_verify", "ca_dir", "auth")


_SOURCE_KEYS = ("endpoint", "tls_verify", "ca_dir", "auth", "min_remaining_pulls", "concurrency")


# More requests in flight than this gain nothing at any round trip measured (benchmarks/
# noop_discovery.py) and look like abuse to a registry's rate limiter.
MAX_CONCURRENCY = 64


_REPLICA_KEYS = ("registry", "tls_verify", "ca_dir", "auth")


_SIGNING_KEYS = ("signer", "key_env", "passphrase_env")


_SETTINGS_KEYS = ("target", "sources", "replicas", "signing", "defaults", "content_admins", "webhooks")


def _read_settings(doc: _Map | None) -> Located[Settings] | None:
    if doc is None:
        return None
    target_map = doc.map_(
        "target", "target", required="add 'target: {registry: HOST}', the trusted registry to promote into"
    )
    target = _read_target(target_map) if target_map else None

    sources: dict[str, Source] = {}
    sources_map = doc.map_("sources", "sources")
    if sources_map is not None:
        for host in sources_map.data:
            source = _read_source(sources_map, host)
            if source is not None:
                sources[source.host] = source

    replicas: list[RegistryEndpoint] = []
    for replica in doc.maps("replicas", "replica", example="replicas: [{registry: registry.eu.example.com}]"):
        replica.check_keys(_REPLICA_KEYS)
        registry = _registry(replica, "registry", required="add 'registry: HOST[:PORT]'")
        auth = _read_auth(replica)
        if registry is not None:
            ca_dir = _ca_dir(replica, "registry", registry, f"replicas[{len(replicas)}]")
            replicas.append(
                RegistryEndpoint(registry, replica.bool_("tls_verify", True), auth, ca_dir=ca_dir)
            )

    signing = Signing()
    signing_map = doc.map_("signing", "signing")
    if signing_map is not None:
        signing_map.check_keys(_SIGNING_KEYS)
        signer = signing_map.str_("signer") or signing.signer
        if not is_valid_signer_name(signer):
            signing_map.error("signer", _bad_signer_name(signer))
        signing = Signing(
            signer=signer,
            key_env=_env_name(signing_map, "key_env") or signing.key_env,
            passphrase_env=_env_name(signing_map, "passphrase_env") or signing.passphrase_env,
        )

    default_policy = "default"
    defaults_map = doc.map_("defaults", "defaults")
    if defaults_map is not None:
        defaults_map.check_keys(("policy",))
        default_policy = defaults_map.str_("policy") or default_policy

    admins = _owners(doc, "content_admins")
    webhooks = [
        hook
        for m in doc.maps(
            "webhooks", "webhook", example="webhooks: [{url_env: SLACK_WEBHOOK_URL, events: [held]}]"
        )
        if (hook := _read_webhook(m)) is not None
    ]
    at = doc.located_keys()
    if signing_map is not None:
        at["signing.signer"] = signing_map.loc("signer")
    if defaults_map is not None:
        at["defaults.policy"] = defaults_map.loc("policy")
    # A broken target is already reported; the rest is still needed by the cross-file checks.
    settings = Settings(
        target=target or Target(registry=""),
        sources=sources,
        replicas=tuple(replicas),
        signing=signing,
        default_policy=default_policy,
        content_admins=admins,
        webhooks=tuple(webhooks),
        location=doc.loc(),
    )
    return Located(settings, at)


def _read_webhook(m: _Map) -> Webhook | None:
    m.check_keys(("url_env", "events"))
    if "url_env" not in m.data:
        m.error(
            "",
            "webhook has no 'url_env'; name the environment variable that holds its "
            "URL, e.g. url_env: SLACK_WEBHOOK_URL (the URL is a secret: never write it here)",
        )
    url_env = _env_name(m, "url_env")
    events = []
    for event, where in (
        m.str_list(
            "events",
            required="add 'events: [held, flagged, demoted, failed]', what the webhook is told about",
            example="events: [held, failed]",
        )
        or []
    ):
        if event in WEBHOOK_EVENTS:
            events.append(event)
        else:
            m.sink.error(where, f"webhook event '{event}' is not one of {', '.join(WEBHOOK_EVENTS)}")
    if url_env is None or not events:
        return None
    return Webhook(url_env=url_env, events=tuple(dict.fromkeys(events)), location=m.loc())


def _read_target(m: _Map) -> Target | None:
    m.check_keys(_TARGET_KEYS)
    registry = _registry(
        m, "registry", required="add 'registry: HOST[:PORT]', the trusted registry to promote into"
    )
    quarantine = _prefix(m, "quarantine", "quarantine")
    approved = _prefix(m, "approved", "approved")
    if quarantine == approved:
        m.error(
            "approved",
            "'quarantine' and 'approved' must be different repository "
            "prefixes, or scanned and unscanned content would mix",
        )
    auth = _read_auth(m)
    if registry is None:
        return None
    return Target(
        registry=registry,
        quarantine=quarantine,
        approved=approved,
        tls_verify=m.bool_("tls_verify", True),
        auth=auth,
        ca_dir=_ca_dir(m, "registry", registry, "target"),
    )


def _read_source(sources: _Map, host: Any) -> Source | None:
    where = sources.loc(host)
    if not isinstance(host, str) or not is_valid_domain(host):
        sources.sink.error(
            where,
            f"'{host}' under sources is not a registry host; write the "
            "host as references use it, e.g. docker.io or ghcr.io",
        )
        return None
    if host.startswith("["):
        sources.sink.error(where, _ipv6_refused(f"'{host}' under sources"))
        return None
    m = sources.map_(host, f"source '{host}'")
    if m is None:
        for d in cert_dirs(host, None, f"sources.{host}"):
            for problem in problems(d):
                sources.sink.error(where, problem)
        return Source(host=_canonical_host(host))
    m.check_keys(_SOURCE_KEYS)
    endpoint = _registry(m, "endpoint")
    auth = _read_auth(m)
    concurrency = m.int_("concurrency", minimum=1)
    if concurrency is not None and concurrency > MAX_CONCURRENCY:
        m.error(
            "concurrency",
            f"'concurrency' in {m.what} must be at most {MAX_CONCURRENCY}, "
            f"not {concurrency}: more requests in flight gain nothing and a "
            "registry's rate limiter counts them against us",
        )
        concurrency = None
    return Source(
        host=_canonical_host(host),
        endpoint=endpoint,
        tls_verify=m.bool_("tls_verify", True),
        auth=auth,
        min_remaining_pulls=m.int_("min_remaining_pulls", minimum=0),
        ca_dir=_ca_dir(
            m, "endpoint" if endpoint else "", endpoint or host, f"sources.{_canonical_host(host)}"
        ),
        concurrency=concurrency,
    )


def _canonical_host(host: str) -> str:
    return DOCKER_HUB if host == "index.docker.io" else host


def _registry(m: _Map, key: str, *, required: str | None = None) -> str | None:
    value = m.str_(key, required=required)
    if value is None:
        return None
    if "://" in value:
        m.error(key, f"'{key}' must be HOST[:PORT] without a scheme; remove '{value.split('://', 1)[0]}://'")
        return None
    if not is_valid_domain(value):
        m.error(
            key,
            f"'{key}' '{value}' is not a registry host; write HOST[:PORT], "
            "e.g. registry.example.com or 127.0.0.1:5000",
        )
        return None
    if value.startswith("["):
        m.error(key, _ipv6_refused(f"'{key}' '{value}'"))
        return None
    return value


def _ipv6_refused(what: str) -> str:
    # Checked against the real skopeo in tests/e2e/test_registry_config_e2e.py, which says when to
    # lift this.
    return (
        f"{what} is an IPv6 literal, which syncer refuses: skopeo 1.9's reference parser "
        "(containers/image docker/reference) rejects bracketed hosts with 'invalid "
        "reference format', so the copy would fail after discovery had planned it; give "
        "the registry a host name that resolves to the address (DNS or /etc/hosts) and "
        "write that name"
    )


def _ca_dir(m: _Map, host_key: str, address: str, what: str) -> str | None:
    """``ca_dir`` of one registry, with every problem of it and of the certs.d directories
    that apply to ``address`` reported: a CA file that does not parse, a client certificate
    without its key (at the line of ``ca_dir``, or of the registry for a certs.d directory)."""
    value = m.str_("ca_dir")
    for d in cert_dirs(address, value, what):
        for problem in problems(d):
            m.error("ca_dir" if value and d.path == value else host_key, problem)
    return value


def _prefix(m: _Map, key: str, default: str) -> str:
    value = m.str_(key)
    if value is None:
        return default
    if not is_valid_repository_path(value):
        m.error(
            key,
            f"'{key}' '{value}' is not a repository path; use lowercase letters, "
            "digits, '.', '_', '-' and '/'",
        )
        return default
    return value


def _read_auth(parent: _Map) -> Auth:
    m = parent.map_("auth", f"auth of {parent.what}")
    if m is None:
        return Auth()
    m.check_keys(_AUTH_KEYS)
    present = [key for key in _AUTH_KEYS if key in m.data]
    if len(present) == 1:
        missing = next(key for key in _AUTH_KEYS if key not in present)
        m.error("", f"{m.what} names only one credential variable; add '{missing}'")
    return Auth(username_env=_env_name(m, "username_env"), password_env=_env_name(m, "password_env"))


def _env_name(m: _Map, key: str) -> str | None:
    value = m.raw(key, None)
    if value is _MISSING:
        return None
    # The value is never shown: if someone pasted a secret here, it must not reach the log.
    if not isinstance(value, str) or _ENV_NAME_RE.fullmatch(value) is None:
        m.error(
            key,
            f"'{key}' must be the name of an environment variable (letters, digits "
            "and '_', not starting with a digit) that holds the secret, never the "
            "secret itself",
        )
        return None
    return value


def _owners(m: _Map, key: str) -> tuple[str, ...]:
    items = m.str_list(key, example=f'{key}: ["@acme/web"]') or []
    owners = []
    for owner, where in items:
        if _OWNER_RE.fullmatch(owner) is None:
            m.sink.error(
                where,
                f"owner '{owner}' in '{key}' is not a GitHub owner; write "
                "@user, @org/team or an e-mail address",
            )
            continue
        owners.append(owner)
    return tuple(owners)


def _bad_signer_name(name: str) -> str:
    return (
        f"signer name '{name}' is invalid: use letters, digits, '.', '_' and '-', "
        "starting with a letter or digit"
    )


_IMAGE_KEYS = ("source", "tags", "match", "exclude", "newest", "platforms", "policy", "name", "owners")


def _read_image(m: _Map, default_policy: str) -> Located[ImageEntry] | None:
    m.check_keys(_IMAGE_KEYS)
    source = _image_source(m)
    tags, tag_locations = [], []
    for tag, where in m.str_list("tags", example='tags: ["1.27.3"]') or []:
        if is_valid_tag(tag):
            tags.append(tag)
            tag_locations.append((tag, where))
        else:
            m.sink.error(
                where,
                f"tag '{tag}' is invalid: up to 128 letters, digits, '_', '.' "
                "or '-', not starting with '.' or '-'",
            )
    match = m.str_("match", example="match: '^1\\.27\\.\\d+$'")
    if match is not None:
        _regex(m, m.loc("match"), "match", match)
    exclude = []
    for pattern, where in m.str_list("exclude", example="exclude: ['-rc']") or []:
        if _regex(m, where, "exclude", pattern):
            exclude.append(pattern)
    if "tags" not in m.data and "match" not in m.data:
        m.error(
            "",
            "image entry has neither 'tags' nor 'match'; list tags, e.g. "
            "tags: [\"1.27.3\"], or give a match regex, e.g. match: '^1\\.27\\.\\d+$'",
        )
    platforms = []
    for platform, where in m.str_list("platforms", example="platforms: [linux/amd64]") or []:
        if _PLATFORM_RE.fullmatch(platform):
            platforms.append(platform)
        else:
            m.sink.error(
                where,
                f"platform '{platform}' is not os/arch[/variant]; write it "
                "like linux/amd64 or linux/arm64/v8",
            )
    newest = m.int_("newest", minimum=1)
    if "match" not in m.data:
        # Explicit tags bypass exclude and newest (syncer.core.selection), so alone they do nothing.
        for key in ("exclude", "newest"):
            if key in m.data:
                m.sink.warning(
                    m.loc(key),
                    f"'{key}' only filters tags found by 'match', and "
                    "this entry has none; add 'match' or remove it",
                )
    policy = m.str_("policy") or default_policy
    owners = _owners(m, "owners")
    explicit = m.str_("name")
    if source is None:
        return None
    name = explicit if explicit is not None else parse_reference(source).familiar_path
    try:
        safe_relpath(name)
    except ValueError as err:
        m.error(
            "name" if explicit is not None else "source",
            f"{err}; image names become paths under reports/ and repositories under "
            "quarantine/ and approved/, so set 'name' to a lowercase repository path",
        )
        return None
    entry = ImageEntry(
        source=source,
        name=name,
        tags=tuple(tags),
        match=match,
        exclude=tuple(exclude),
        newest=newest,
        platforms=tuple(platforms),
        policy=policy,
        owners=owners,
        location=m.loc(),
        tag_locations=tuple(tag_locations),
    )
    return Located(entry, m.located_keys())


def _image_source(m: _Map) -> str | None:
    text = m.str_(
        "source",
        required="add 'source: docker.io/library/NAME', the upstream repository",
        example="source: nginx",
    )
    if text is None:
        return None
    try:
        ref = parse_reference(text)
    except ValueError as err:
        m.error(
            "source",
            f"source '{text}' is not a valid image reference: {err}; write it "
            "like docker.io/library/nginx or bitnami/redis",
        )
        return None
    if ref.registry.startswith("["):
        m.error("source", _ipv6_refused(f"source '{text}'"))
        return None
    if ref.tag is not None or ref.digest is not None:
        part = f"tag '{ref.tag}'" if ref.tag is not None else "a digest"
        m.error(
            "source",
            f"source '{text}' includes {part}; write source: {ref.name} and "
            "list tags under 'tags' (digests are resolved by the pipeline)",
        )
        return None
    return ref.name


def _regex(m: _Map, where: Location, key: str, pattern: str) -> bool:
    try:
        compile_pattern(pattern)
    except PatternError as err:
        m.sink.error(
            where,
            f"'{key}' regex '{pattern}' is refused: {err}; fix the pattern "
            "(RE2 syntax: no backreferences or lookaround, so that matching "
            "takes linear time; see docs/catalog.md)",
        )
        return False
    return True


_POLICY_KEYS = (
    "vulnerabilities",
    "licenses",
    "max_age_days",
    "approval",
    "signers",
    "on_regression",
    "unassessed",
    "teams",
)


def _read_policy(m: _Map, name: str) -> Located[Policy]:
    maximum: dict[Severity, int] = {}
    ignore_unfixed = False
    vulns = m.map_("vulnerabilities", f"vulnerabilities of policy '{name}'")
    if vulns is not None:
        vulns.check_keys(("max", "ignore_unfixed"))
        ignore_unfixed = vulns.bool_("ignore_unfixed", False)
        counts = vulns.map_("max", f"vulnerabilities.max of policy '{name}'")
        if counts is not None:
            counts.check_keys(_SEVERITIES)
            for severity in _SEVERITIES:
                count = counts.int_(severity, minimum=0)
                if count is not None:
                    maximum[Severity.parse(severity)] = count
    deny: list[str] = []
    licenses = m.map_("licenses", f"licenses of policy '{name}'")
    if licenses is not None:
        licenses.check_keys(("deny",))
        deny = [item for item, _ in licenses.str_list("deny", example="deny: [AGPL-3.0-only]") or []]
    signers = []
    for signer, where in m.str_list("signers", example="signers: [ci]") or []:
        if is_valid_signer_name(signer):
            signers.append(signer)
        else:
            m.sink.error(where, _bad_signer_name(signer))
    policy = Policy(
        name=name,
        max=maximum,
        ignore_unfixed=ignore_unfixed,
        deny_licenses=tuple(deny),
        max_age_days=m.int_("max_age_days", minimum=1),
        approval=m.choice("approval", APPROVAL_MODES, "auto"),
        signers=tuple(signers),
        on_regression=m.choice("on_regression", REGRESSION_ACTIONS, "flag"),
        unassessed=m.choice("unassessed", UNASSESSED_ACTIONS, "hold"),
        teams=_owners(m, "teams"),
        location=m.loc(),
    )
    at = m.located_keys()
    listed = m.data.get("signers")
    for index, signer in enumerate(listed if isinstance(listed, list) else []):
        if isinstance(signer, str):
            at.setdefault(f"signers.{signer}", m.item_loc("signers", index))
    return Located(policy, at)


_EXCEPTION_KEYS = ("vulnerability", "images", "expires", "reason")


def _read_exception(m: _Map) -> Located[VulnException] | None:
    m.check_keys(_EXCEPTION_KEYS)
    vulnerability = m.str_("vulnerability", required="add 'vulnerability: CVE-…', the id Trivy reports")
    if vulnerability is not None and any(c.isspace() for c in vulnerability):
        m.error(
            "vulnerability",
            f"vulnerability '{vulnerability}' contains whitespace; write "
            "one id as Trivy reports it, e.g. CVE-2024-1234",
        )
        vulnerability = None
    patterns = m.str_list(
        "images",
        required="add 'images: [NAME, …]', the catalog names (globs allowed) it applies to",
        example='images: ["nginx", "redis*"]',
    )
    if patterns == []:
        m.error("images", "'images' is empty; name the catalog images this exception covers")
    expires = m.date_("expires", required="add 'expires: YYYY-MM-DD'; every exception must end")
    reason = m.str_("reason", required="add 'reason: …', why the risk is accepted")
    if vulnerability is None or not patterns or expires is None:
        return None
    # A missing reason is already reported; expiry and patterns are still cross-checked.
    exception = VulnException(
        vulnerability=vulnerability,
        images=tuple(p for p, _ in patterns),
        expires=expires,
        reason=reason or "",
        location=m.loc(),
    )
    at = m.located_keys()
    for pattern, where in patterns:
        at.setdefault(f"images.{pattern}", where)
    return Located(exception, at)


def _read_approval(m: _Map) -> Located[Approval] | None:
    m.check_keys(("image", "digest", "by", "reason"))
    image = m.str_("image", required="add 'image: NAME', the catalog name it approves")
    digest = m.str_("digest", required="add 'digest: sha256:…', the exact digest approved")
    if digest is not None and not is_sha256_digest(digest):
        m.error(
            "digest",
            f"digest '{digest}' is not sha256: followed by 64 lowercase hex "
            "digits; copy it from the image's report",
        )
    by = m.str_("by", required="add 'by: \"@user\"', who approved it")
    reason = m.str_("reason") or ""
    if image is None:
        return None
    # Missing or malformed fields are already reported; the image is still cross-checked.
    return Located(
        Approval(image=image, digest=digest or "", by=by or "", reason=reason, location=m.loc()),
        m.located_keys(),
    )


def _read_access(doc: _Map) -> list[Located[AccessGroup]]:
    groups_map = doc.map_("groups", "groups")
    if groups_map is None:
        return []
    groups = []
    for name in groups_map.data:
        m = groups_map.map_(name, f"group '{name}'")
        if m is None:
            continue
        m.check_keys(("members", "pull", "push"))
        # The anonymous group applies to everyone, so it alone needs no members.
        needs_members = None if name == "anonymous" else "add 'members: [USER, …]'"
        members = [
            member
            for member, _ in m.str_list("members", required=needs_members, example="members: [dev1, dev2]")
            or []
        ]
        patterns: dict[str, tuple[str, ...]] = {}
        for key in ("pull", "push"):
            globs = []
            for glob, where in m.str_list(key, example=f'{key}: ["approved/*"]') or []:
                if _REPO_GLOB_RE.fullmatch(glob):
                    globs.append(glob)
                else:
                    m.sink.error(
                        where,
                        f"'{key}' pattern '{glob}' may only contain lowercase "
                        "letters, digits, '.', '_', '-', '/' and '*'",
                    )
            patterns[key] = tuple(globs)
        groups.append(
            Located(
                AccessGroup(
                    name=str(name),
                    members=tuple(members),
                    pull=patterns["pull"],
                    push=patterns["push"],
                    location=m.loc(),
                ),
                m.located_keys(),
            )
        )
    return groups


def _read_signers(draft: Draft, sink: _Sink) -> None:
    for stray in sorted(draft.root.rglob("*.key")):
        sink.error(
            Location(display_path(stray), 0),
            "a private key file is inside the catalog; delete it, rotate the key, "
            "and commit only the public half (signers/NAME.pub)",
        )
    directory = draft.root / "signers"
    if not directory.is_dir():
        return
    for path in sorted(directory.glob("*.pub")):
        name, file = path.stem, display_path(path)
        draft.signer_files.add(name)
        if not is_valid_signer_name(name):
            sink.error(Location(file, 0), _bad_signer_name(name) + "; rename the file")
            continue
        try:
            with path.open("rb") as stream:
                data = stream.read(MAX_FILE_BYTES + 1)
        except OSError as err:
            sink.error(Location(file, 0), f"cannot be read ({err.strerror})")
            continue
        if len(data) > MAX_FILE_BYTES:
            sink.error(
                Location(file, 0),
                f"is larger than {MAX_FILE_BYTES // 1024} KiB; a public "
                f"key is a few hundred bytes: write the one from "
                f"'syncer keygen {name}'",
            )
            continue
        if b"PRIVATE KEY" in data:
            sink.error(
                Location(file, 0),
                "contains a private key; delete it, rotate the key, and commit only the public half",
            )
            continue
        try:
            load_pem_public_key(data)
            pem = data.decode("ascii")
        except (ValueError, TypeError):  # UnicodeDecodeError is a ValueError
            sink.error(
                Location(file, 0),
                f"is not a PEM public key; replace it with the public half written by 'syncer keygen {name}'",
            )
            continue
        draft.signers[name] = pem
