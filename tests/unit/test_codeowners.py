"""CODEOWNERS generated from the catalog: the rendering, and staleness through the real CLI."""

from __future__ import annotations

import sys
from pathlib import Path

from syncer.access.codeowners import HEADER, render_codeowners, stale_check
from syncer.core.model import Catalog, ImageEntry, Location, Settings, Target

REPO = Path(__file__).resolve().parents[2]
SYNCER = Path(sys.executable).parent / "syncer"


def entry(root: Path, file: str, name: str, owners: tuple[str, ...]) -> ImageEntry:
    return ImageEntry(
        source=f"docker.io/library/{name}",
        name=name,
        owners=owners,
        location=Location(str(root / "catalog" / "images" / file), 2),
    )


def small_catalog(
    root: Path, admins: tuple[str, ...] = ("@acme/security",), reverse: bool = False
) -> Catalog:
    images = [
        entry(root, "web.yaml", "nginx", ("@acme/web",)),
        entry(root, "web.yaml", "httpd", ("@acme/web", "@alice")),
        entry(root, "data.yaml", "redis", ("@acme/data", "@acme/security")),
        entry(root, "1?.yaml", "greedy", ("@mallory",)),
    ]
    return Catalog(
        root=str(root / "catalog"),
        settings=Settings(target=Target(registry="registry.example.com"), content_admins=admins),
        images=tuple(reversed(images) if reverse else images),
    )


def test_render_small_catalog(tmp_path: Path) -> None:
    assert render_codeowners(small_catalog(tmp_path)) == HEADER + "\n" + "".join(
        f"{pattern:<25}  {owners}\n"
        for pattern, owners in [
            ("*", "@acme/security"),
            ("/catalog/", "@acme/security"),
            ("/catalog/images/data.yaml", "@acme/data @acme/security"),
            ("/catalog/images/web.yaml", "@acme/web @alice @acme/security"),
            ("/catalog/access.yaml", "@acme/security"),
            ("/catalog/approvals/", "@acme/security"),
            ("/catalog/exceptions/", "@acme/security"),
            ("/catalog/policies/", "@acme/security"),
            ("/catalog/settings.yaml", "@acme/security"),
            ("/catalog/signers/", "@acme/security"),
            ("/.github/CODEOWNERS", "@acme/security"),
            ("/.github/workflows/", "@acme/security"),
        ]
    )


def test_render_is_independent_of_entry_order(tmp_path: Path) -> None:
    assert render_codeowners(small_catalog(tmp_path)) == render_codeowners(
        small_catalog(tmp_path, reverse=True)
    )


def test_without_content_admins_only_image_owners_are_listed(tmp_path: Path) -> None:
    rendered = render_codeowners(small_catalog(tmp_path, admins=()))
    rules = [line.split() for line in rendered.splitlines() if line and not line.startswith("#")]
    assert rules == [
        ["/catalog/images/data.yaml", "@acme/data", "@acme/security"],
        ["/catalog/images/web.yaml", "@acme/web", "@alice"],
    ]


def test_stale_check_on_hand_built_catalog(tmp_path: Path) -> None:
    catalog = small_catalog(tmp_path)
    missing = stale_check(catalog, tmp_path)
    assert missing is not None and "is missing; run `syncer codeowners`" in missing.message
    target = tmp_path / ".github" / "CODEOWNERS"
    target.parent.mkdir()
    target.write_text(render_codeowners(catalog))
    assert stale_check(catalog) is None  # the repository root defaults to the catalog's parent
    target.write_text(render_codeowners(catalog) + "/extra  @someone\n")
    stale = stale_check(catalog, tmp_path)
    assert stale is not None and stale.level == "error"
    assert stale.location.file.endswith(".github/CODEOWNERS")
    assert "out of date" in stale.message
