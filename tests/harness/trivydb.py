"""The ``trivy_db`` fixture over ``syncer.demo.trivydb`` (Trivy's on-disk DBs written in
Python), and ``trivy_server``: a real ``trivy server`` over a generated DB."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
import requests

from syncer.demo.registry import free_port, terminate
from syncer.demo.trivydb import (  # noqa: F401 - re-exported for tests
    DEFAULT_ADVISORIES,
    DEFAULT_UPDATED_AT,
    ECOSYSTEMS,
    PAGE_SIZE,
    Advisory,
    Bucket,
    JavaArtifact,
    TrivyDB,
    db_artifact,
    encode_bbolt,
    trivy_buckets,
    write_java_db,
    write_trivy_db,
)
from syncer.tools import trivy

SERVER_STARTUP = 30.0


@pytest.fixture
def trivy_db(tmp_path_factory) -> Iterator[TrivyDB]:
    """A fresh cache directory holding DEFAULT_ADVISORIES, UpdatedAt DEFAULT_UPDATED_AT, and an
    empty Java DB: with both fresh, a run that may update them downloads nothing. At teardown
    the run server a killed ``syncer run`` left on this cache is stopped: the next run on the
    cache would stop it, but a test's cache has no next run."""
    db = TrivyDB(tmp_path_factory.mktemp("trivy-cache"), DEFAULT_ADVISORIES)
    yield db.write(updated_at=DEFAULT_UPDATED_AT).write_java()
    trivy._stop_leftover(Path(db.cache_dir) / trivy._RUN_SERVER_DIR)


@dataclass(frozen=True)
class TrivyServer:
    url: str  # http://127.0.0.1:PORT
    port: int
    db: TrivyDB  # what it loaded at start; it never reloads (it runs with --skip-db-update)
    log: Path
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        terminate(self.process)


@pytest.fixture
def trivy_server(tmp_path_factory) -> Iterator[Callable[..., TrivyServer]]:
    """Starts ``trivy server`` processes offline: ``trivy_server(advisories, updated_at=…)``,
    on a free port or ``port=``. Each is stopped at teardown."""
    started: list[subprocess.Popen[bytes]] = []

    def start(
        advisories=DEFAULT_ADVISORIES, *, updated_at: datetime = DEFAULT_UPDATED_AT, port: int | None = None
    ) -> TrivyServer:
        work = tmp_path_factory.mktemp("trivy-server")
        db = TrivyDB(work / "cache", tuple(advisories)).write(updated_at=updated_at)
        port = port or free_port()
        log = work / "server.log"
        with open(log, "wb") as out:
            started.append(
                subprocess.Popen(
                    [
                        trivy.binary(),
                        "server",
                        "--cache-dir",
                        str(db.cache_dir),
                        "--skip-db-update",
                        "--listen",
                        f"127.0.0.1:{port}",
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=work,
                )
            )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + SERVER_STARTUP
        while time.monotonic() < deadline and started[-1].poll() is None:
            try:
                if requests.get(f"{url}/healthz", timeout=2).text == "ok":
                    return TrivyServer(url, port, db, log, started[-1])
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"trivy server on {url} did not come up: {log.read_text()[-2000:]}")

    yield start
    for process in started:
        terminate(process)
