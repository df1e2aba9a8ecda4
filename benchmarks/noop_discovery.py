"""Issues 3 and 14: the hourly run when nothing changed upstream, near and across the internet.

Seeds a registry playing Docker Hub with REPOS repositories of TAGS matching tags each (one
small image, the same manifest under every tag of every repository, so the first run scans
once) plus one tag the catalog does not match, and a second one in ``auth: token`` mode behind a real ``syncer auth-server`` with
the same content. Mirrors everything once with ``syncer run``, then times no-op ``syncer run``s
against ``skopeo sync --src yaml --dest docker`` of the same tags (``images-by-tag-regex``: the
same regex as the catalog's ``match``) into the quarantine namespace that already holds them:

* on localhost, straight to the first registry, alternately, ``--repeat`` times;
* through the harness's latency proxy (``tests/harness/faultproxy.py``) adding ``--latency-ms``
  to every request, to the first registry, then to the token-mode one (its token service
  behind a proxy of its own, so token requests pay the round trip too), each with
  ``sources.docker.io.concurrency`` at every value of ``--concurrency``. skopeo sync takes one
  request after another and seconds per tag, so at latency it syncs the first
  ``--skopeo-repos`` repositories only and its time is scaled per tag (every repository has
  the same shape, so its requests per tag are the same over the subset and the whole).

Upstream requests are counted where they arrive (the access log, or the proxies). The floor
of a run is its requests x the added round trip / the concurrency: what it would take if
nothing but the round trips cost time.

Goals (issue 3): no manifest GET upstream; at most one HEAD per tracked tag plus one tag list
per repository; at least 5x faster than skopeo sync on localhost. Issue 14, at 30 ms: at
least 20x faster than skopeo sync and within 1.5x of the floor at the default concurrency.

    .venv/bin/python benchmarks/noop_discovery.py [--small] [--repeat N] [--keep]
        [--latency-ms MS] [--concurrency 8,16,32] [--skopeo-repos N] [--profile FILE]
"""

from __future__ import annotations

import base64
import json
import os
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c

from syncer.demo.registry import Registry as SandboxRegistry
from syncer.demo.tokenauth import AuthServer, Robot, access_config, write_users
from syncer.tools.registry import DEFAULT_CONCURRENCY, Credentials, RegistryClient
from tests.harness.faultproxy import FaultProxy
from tests.harness.tokenregistry import SPEC_ACCESS
from tests.harness.tokenregistry import write_catalog as write_access_catalog

MATCH = r"^1\.\d+\.0$"
SERVICE = "syncer-bench"
USER_VAR, TOKEN_VAR = "BENCH_HUB_USER", "BENCH_HUB_TOKEN"


def repo_name(i: int) -> str:
    return f"bench-{i:03d}"


def catalog_files(repos: int) -> dict[str, str]:
    return c.team_files(
        repos,
        10,
        lambda i, team: (
            f"  - source: docker.io/library/{repo_name(i)}\n"
            f"    match: '{MATCH}'\n"
            f'    owners: ["@acme/{team}"]\n'
        ),
    )


def sync_yaml(path: Path, hub_host: str, repos: int) -> Path:
    """skopeo's yaml source: the same repositories and the same regex as the catalog."""
    regexes = {f"library/{repo_name(i)}": MATCH for i in range(repos)}
    # JSON is YAML; it spares us quoting the regexes.
    path.write_text(json.dumps({hub_host: {"tls-verify": False, "images-by-tag-regex": regexes}}, indent=2))
    return path


@dataclass
class TokenHub:
    """A token-mode registry whose realm is a latency proxy in front of ``syncer auth-server``."""

    registry: SandboxRegistry
    auth: AuthServer
    auth_proxy: FaultProxy
    robot: Robot

    @classmethod
    def start(cls, root: Path, latency: float) -> TokenHub:
        catalog = root / "access-catalog"
        write_access_catalog(catalog, SPEC_ACCESS)
        users = root / "users.htpasswd"
        write_users(users, {"dev1": "bench-password"})
        robot = Robot("syncer", base64.urlsafe_b64encode(os.urandom(18)).decode())
        keys = root / "token-keys"
        first = access_config("http://127.0.0.1:1", SERVICE, keys)
        auth = AuthServer(
            root / "auth-server.log",
            key=Path(first["key"]),
            cert=Path(first["cert"]),
            catalog=catalog,
            users=users,
            robot=robot,
        )
        proxy = FaultProxy(auth.url, latency=latency)
        config = access_config(proxy.url, SERVICE, keys)
        registry = SandboxRegistry(root / "registry", delete=True, auth=config["auth"])
        return cls(registry, auth, proxy, robot)

    def client(self) -> RegistryClient:
        return RegistryClient(
            self.registry.host, tls_verify=False, credentials=Credentials(self.robot.name, self.robot.secret)
        )

    def stop(self) -> None:
        self.registry.stop()
        self.auth_proxy.stop()
        self.auth.stop()

    def authfile(self, root: Path, host: str) -> Path:
        """skopeo's credentials for ``host`` (the registry's proxy), in a 0600 file."""
        path = root / "skopeo-auth.json"
        path.touch(mode=0o600)
        pair = base64.b64encode(f"{self.robot.name}:{self.robot.secret}".encode()).decode()
        path.write_text(json.dumps({"auths": {host: {"auth": pair}}}))
        return path


def seed_token_hub(hub: TokenHub, repos: int, tags: list[str]) -> None:
    """The same images as the plain hub, pushed with the robot's tokens."""
    with hub.client() as client:
        image = c.small_image("bench")

        def push(i: int) -> None:
            repo = f"library/{repo_name(i)}"
            for blob in (image.config, *image.layers):
                client.put_blob(repo, blob.data)
            for tag in tags:
                client.put_manifest(repo, tag, image.manifest.data, image.manifest.media_type)

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(push, range(repos)))


@dataclass(frozen=True)
class Measured:
    label: str
    concurrency: int
    times: c.Spread
    requests: int  # upstream requests of one run, tokens included
    tokens: int  # of which token requests
    latency: float

    @property
    def floor(self) -> float:
        return self.requests * self.latency / self.concurrency


def main() -> int:
    p = c.parser(__doc__.split("\n\n")[0])
    p.add_argument(
        "--latency-ms",
        type=float,
        default=30.0,
        metavar="MS",
        help="added to every upstream request by a proxy for the comparisons at "
        "latency (default: %(default)s; 0 skips them)",
    )
    p.add_argument(
        "--concurrency",
        default="8,16,32",
        metavar="N,N,…",
        help="values of sources.docker.io.concurrency measured at latency "
        "(default: %(default)s; the default concurrency is added if missing)",
    )
    p.add_argument(
        "--skopeo-repos",
        type=int,
        default=None,
        metavar="N",
        help="repositories skopeo sync syncs at latency, scaled per tag (default: 20, 4 with --small)",
    )
    p.add_argument(
        "--profile",
        metavar="FILE",
        type=Path,
        help="also run one no-op under cProfile, save the stats to FILE and print "
        "the functions with the most cumulative time",
    )
    args = p.parse_args()
    repos, tags_per_repo = (20, 10) if args.small else (200, 10)
    subset = min(repos, args.skopeo_repos or (4 if args.small else 20))
    levels = sorted({int(x) for x in args.concurrency.split(",")} | {DEFAULT_CONCURRENCY})
    latency = args.latency_ms / 1000
    tracked = repos * tags_per_repo
    tags = [f"1.{j}.0" for j in range(tags_per_repo)] + ["latest"]
    print(
        f"noop_discovery: {repos} repositories x {tags_per_repo} tracked tags = {tracked} tags "
        f"(+1 untracked tag each)"
    )
    print(f"machine: {c.machine()}")

    with c.Workspace("noop", keep=args.keep) as ws:
        hub, target = ws.registry("hub"), ws.registry("target")
        db = ws.trivy_db()
        image = c.small_image("bench")
        for i in range(repos):
            c.upload(hub, f"library/{repo_name(i)}", image, tags)
        setup = c.write_catalog(
            ws.root,
            hub=hub,
            target_host=target.host,
            image_files=catalog_files(repos),
            trivy_cache=db.cache_dir,
        )
        settings = Settings(setup, hub.host)

        # syncer's modules compiled once, as an installed package has them (pip compiles them
        # on install): with PYTHONDONTWRITEBYTECODE set, as in some sandboxes, every run would
        # compile them anew, 0.3-0.6 s of a no-op's CPU that no installed syncer spends.
        compiled = {"PYTHONDONTWRITEBYTECODE": "", "PYTHONPYCACHEPREFIX": str(ws.root / "pycache")}

        c.heading("first run (mirror, scan, sign, promote everything), --jobs 4")
        mark = len(hub.requests())
        first = c.timed(
            setup.argv("run", "--jobs", "4"), env={**setup.env(), **compiled}, cwd=setup.root, timeout=3600
        )
        c.line("time", f"{first.seconds:.1f} s (exit {first.returncode})")
        c.line("upstream requests", c.kinds_text(c.request_kinds(hub.requests()[mark:])))
        c.line("states after it", c.states_text(setup))
        c.require_ok("mirroring everything", first)
        if c.states(setup).get("promoted") != tracked:
            raise SystemExit(f"expected {tracked} promoted records: {c.states_text(setup)}")

        policy = c.skopeo_policy(ws.root)
        quarantine_before = _target_repositories(target)
        snapshot = setup.reports_snapshot()

        def noop(env: dict[str, str] | None = None) -> c.Timed:
            result = c.require_ok(
                "no-op syncer run",
                c.timed(setup.argv("run"), env={**setup.env(), **compiled, **(env or {})}, cwd=setup.root),
            )
            if setup.reports_snapshot() != snapshot or "Nothing changed" not in result.stdout:
                raise SystemExit(f"the no-op run changed something:\n{result.stdout}")
            return result

        def skopeo(host: str, count: int, *flags: str) -> c.Timed:
            source = sync_yaml(ws.root / f"sync-{count}.yaml", host, count)
            return c.require_ok(
                "skopeo sync",
                c.timed(
                    [
                        "skopeo",
                        "--policy",
                        str(policy),
                        "sync",
                        "--src",
                        "yaml",
                        "--dest",
                        "docker",
                        "--all",
                        "--preserve-digests",
                        "--dest-tls-verify=false",
                        "--dest-no-creds",
                        *flags,
                        str(source),
                        f"{target.host}/quarantine",
                    ],
                    timeout=3600,
                ),
            )

        # --- localhost -----------------------------------------------------------------------
        syncer_times, skopeo_times, syncer_cpu, skopeo_cpu = [], [], [], []
        syncer_kinds = skopeo_kinds = None
        for n in range(c.repeats(args)):
            mark = len(hub.requests())
            ours = noop()
            syncer_kinds = syncer_kinds or c.request_kinds(hub.requests()[mark:])
            syncer_times.append(ours.seconds)
            syncer_cpu.append(ours.cpu_seconds)
            mark = len(hub.requests())
            sync = skopeo(hub.host, repos)
            skopeo_kinds = skopeo_kinds or c.request_kinds(hub.requests()[mark:])
            skopeo_times.append(sync.seconds)
            skopeo_cpu.append(sync.cpu_seconds)
            print(
                f"  round {n + 1}: syncer {ours.seconds:.2f} s, skopeo sync {sync.seconds:.2f} s", flush=True
            )
        if args.profile:
            c.profile(setup, args.profile, "run")
        near, theirs = c.Spread(tuple(syncer_times)), c.Spread(tuple(skopeo_times))
        c.heading(f"localhost: no-op run over {tracked} tracked tags in {repos} repositories")
        c.line(f"syncer run (no-op, concurrency {DEFAULT_CONCURRENCY})", near.text())
        c.line("skopeo sync (same tags, target has them)", theirs.text())
        c.line("syncer run: CPU", c.Spread(tuple(syncer_cpu)).text())
        c.line("skopeo sync: CPU", c.Spread(tuple(skopeo_cpu)).text())
        c.line("speed-up (skopeo sync / syncer)", f"{c.ratio(theirs, near)} (goal >= 5x)")
        c.line("upstream requests, syncer no-op", c.kinds_text(syncer_kinds))
        c.line("upstream requests, skopeo sync", c.kinds_text(skopeo_kinds))

        far: list[tuple[str, list[Measured], float]] = []
        if latency > 0:
            # --- through the latency proxy ---------------------------------------------------
            with FaultProxy(hub.url, latency=latency) as proxy:
                measured = [
                    _measure(
                        f"{args.latency_ms:.0f} ms",
                        level,
                        latency,
                        proxy,
                        None,
                        lambda level=level: noop_with(settings, proxy.host, level, noop),
                        c.repeats(args),
                    )
                    for level in levels
                ]
                sync = skopeo(proxy.host, subset)
                far.append(("no auth", measured, sync.seconds * repos / subset))
            c.heading(f"seeding the token-mode registry ({repos} repositories)")
            token_hub = TokenHub.start(ws.root / "token-hub", latency)
            try:
                seed_token_hub(token_hub, repos, tags)
                with FaultProxy(token_hub.registry.url, latency=latency) as proxy:
                    env = {USER_VAR: token_hub.robot.name, TOKEN_VAR: token_hub.robot.secret}
                    measured = [
                        _measure(
                            f"{args.latency_ms:.0f} ms, token auth",
                            level,
                            latency,
                            proxy,
                            token_hub.auth_proxy,
                            lambda level=level: noop_with(settings, proxy.host, level, noop, env=env),
                            c.repeats(args),
                        )
                        for level in levels
                    ]
                    authfile = token_hub.authfile(ws.root, proxy.host)
                    sync = skopeo(proxy.host, subset, "--src-authfile", str(authfile))
                    far.append(("token auth", measured, sync.seconds * repos / subset))
            finally:
                token_hub.stop()
        if _target_repositories(target) != quarantine_before:
            raise SystemExit("skopeo sync wrote repositories syncer had not: the comparison is unfair")

        for title, measured, skopeo_scaled in far:
            c.heading(f"{args.latency_ms:.0f} ms added to every upstream request, {title}")
            c.line(
                f"skopeo sync, {subset * tags_per_repo} tags scaled to {tracked}", f"{skopeo_scaled:.1f} s"
            )
            for m in measured:
                mark = " (default)" if m.concurrency == DEFAULT_CONCURRENCY else ""
                c.line(
                    f"syncer, concurrency {m.concurrency}{mark}",
                    f"{m.times.text()}; {m.requests} requests ({m.tokens} token); floor "
                    f"{m.floor:.2f} s, {m.times.median / m.floor:.2f}x it; "
                    f"{skopeo_scaled / m.times.median:.1f}x faster than skopeo sync",
                )

        heads, lists = syncer_kinds["HEAD manifest"], syncer_kinds["GET tags list"]
        c.heading("goals")
        c.line(
            "manifest GETs upstream (goal 0)",
            _verdict(syncer_kinds["GET manifest"] == 0, str(syncer_kinds["GET manifest"])),
        )
        c.line(f"HEADs <= {tracked} tracked tags", _verdict(heads <= tracked, str(heads)))
        c.line(f"tag lists <= {repos} repositories", _verdict(lists <= repos, str(lists)))
        c.line(
            ">= 5x faster than skopeo sync (localhost)",
            _verdict(theirs.median >= 5 * near.median, c.ratio(theirs, near)),
        )
        for title, measured, skopeo_scaled in far:
            m = next(m for m in measured if m.concurrency == DEFAULT_CONCURRENCY)
            c.line(
                f">= 20x faster than skopeo sync ({title})",
                _verdict(skopeo_scaled >= 20 * m.times.median, f"{skopeo_scaled / m.times.median:.1f}x"),
            )
            c.line(
                f"within 1.5x of the floor ({title})",
                _verdict(m.times.median <= 1.5 * m.floor, f"{m.times.median / m.floor:.2f}x"),
            )
    return 0


class Settings:
    """settings.yaml's docker.io source pointed elsewhere for a while, then restored."""

    def __init__(self, setup: c.Setup, hub_host: str):
        self.path = setup.catalog / "settings.yaml"
        self.original = self.path.read_text()
        self.line = f"    endpoint: {hub_host}\n"

    @contextmanager
    def source(self, endpoint: str, concurrency: int, *, auth: bool) -> Iterator[None]:
        lines = f"    endpoint: {endpoint}\n    concurrency: {concurrency}\n"
        if auth:
            lines += f"    auth: {{username_env: {USER_VAR}, password_env: {TOKEN_VAR}}}\n"
        self.path.write_text(self.original.replace(self.line, lines))
        try:
            yield
        finally:
            self.path.write_text(self.original)


def noop_with(
    settings: Settings,
    endpoint: str,
    concurrency: int,
    run: Callable[[dict[str, str] | None], c.Timed],
    *,
    env: dict[str, str] | None = None,
) -> c.Timed:
    """``run`` (a no-op syncer run) with the source at ``endpoint``; credentials in ``env``."""
    with settings.source(endpoint, concurrency, auth=env is not None):
        return run(env)


def _measure(
    label: str,
    level: int,
    latency: float,
    proxy: FaultProxy,
    token_proxy: FaultProxy | None,
    once: Callable[[], c.Timed],
    rounds: int,
) -> Measured:
    times, requests, tokens = [], 0, 0
    for _ in range(rounds):
        seen, token_seen = len(proxy.seen), len(token_proxy.seen) if token_proxy else 0
        result = once()
        times.append(result.seconds)
        tokens = (len(token_proxy.seen) - token_seen) if token_proxy else 0
        requests = len(proxy.seen) - seen + tokens
    spread = c.Spread(tuple(times))
    print(f"  {label}, concurrency {level}: {spread.text()}, {requests} requests", flush=True)
    return Measured(label, level, spread, requests, tokens, latency)


def _verdict(ok: bool, value: str) -> str:
    return f"{value}  {'met' if ok else 'NOT MET'}"


def _target_repositories(target) -> list[str]:
    with c.harness_session(target) as session:
        resp = session.get(f"{target.url}/v2/_catalog?n=1000", timeout=c.HTTP_TIMEOUT)
        resp.raise_for_status()
        return sorted(resp.json().get("repositories") or [])


if __name__ == "__main__":
    sys.exit(main())
