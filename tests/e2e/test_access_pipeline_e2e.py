"""The whole pipeline against a trusted registry in token mode, behind `syncer auth-server`
enforcing catalog/access.yaml: the pipeline robot mirrors, scans, signs and promotes; a
developer then pulls from approved/ but not from quarantine/."""

from __future__ import annotations

import pytest

from syncer.core.model import State
from syncer.errors import RegistryAuthError, RegistryError
from tests.harness.images import alpine_files, build_image
from tests.harness.tokenregistry import TokenWorld
from tests.harness.world import World

CLEAN = (("musl", "1.2.5-r0", "musl"), ("busybox", "1.36.1-r29", "busybox"))


def test_syncer_run_against_a_token_mode_registry(tmp_path, registry_factory, trivy_db):
    tokens = TokenWorld(tmp_path / "token", realm_host="localhost")
    try:
        world = World(root=tmp_path / "world", hub=registry_factory(), target=tokens.registry, db=trivy_db)
        world.write_settings(
            target_extra="auth: {username_env: TARGET_USERNAME, password_env: TARGET_PASSWORD}"
        )
        world.env.update(TARGET_USERNAME="syncer", TARGET_PASSWORD=tokens.passwords["syncer"])
        world.db.write(())
        digest = world.push("library/alpine:3.20", build_image(alpine_files(CLEAN)))
        world.images("""
            images:
              - source: alpine
                tags: ["3.20"]
        """)
        proc = world.run()
        rec = world.record("alpine", "3.20")
        assert rec.state is State.PROMOTED, proc.stderr
        assert tokens.passwords["syncer"] not in proc.stdout + proc.stderr
        # Promoted by blob mounts: one token naming approved/ (push) and quarantine/ (pull).
        mounts = [r for r in tokens.registry.requests() if r.method == "POST" and "mount=" in r.uri]
        assert len(mounts) == 2 and all(
            r.uri.startswith("/v2/approved/alpine/") and r.status == 201 for r in mounts
        ), mounts  # the config and the one layer

        developer = tokens.client("dev1")
        assert developer.head_manifest("approved/alpine", "3.20").digest == digest
        with pytest.raises((RegistryAuthError, RegistryError)):
            developer.head_manifest("quarantine/alpine", "3.20")
        assert tokens.client("admin").head_manifest("quarantine/alpine", "3.20").digest == digest

        # A run with the developer's credentials cannot push anything: fail closed, recorded.
        world.env.update(TARGET_USERNAME="dev1", TARGET_PASSWORD=tokens.passwords["dev1"])
        world.push("library/alpine:3.21", build_image(alpine_files(CLEAN[:1])))
        world.images("""
            images:
              - source: alpine
                tags: ["3.20", "3.21"]
        """)
        world.run(expect=1)
        assert world.record("alpine", "3.21").state is State.FAILED
        with pytest.raises(RegistryError):
            tokens.client("admin").head_manifest("approved/alpine", "3.21")
    finally:
        tokens.stop()
