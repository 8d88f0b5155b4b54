"""Fixtures for the batch tests: a throwaway PostgreSQL cluster, ledger URLs, a controllable clock.

``postgres_url`` (session): ``initdb`` a cluster in a temporary directory, start ``postgres`` on a Unix socket
in that directory and a free loopback port, wait until it accepts connections, yield a psycopg URL, stop it.
Under root the server runs as the ``postgres`` system user (PostgreSQL refuses to run as root), created if
missing. Without PostgreSQL installed the tests are skipped — except in CI (env ``CI`` set), where they fail.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

PG_USER = "cardkit"
PG_DB = "cardkit"
STARTUP_TIMEOUT_S = 60.0


def _version_key(path: str) -> tuple[int, ...]:
    m = re.search(r"/postgresql/([\d.]+)/", path)
    return tuple(int(p) for p in m.group(1).split(".")) if m else (0,)


def find_pg_bindir() -> Path | None:
    """The newest PostgreSQL server bin directory (Debian: /usr/lib/postgresql/<version>/bin)."""
    found = sorted((str(p) for p in Path("/usr/lib/postgresql").glob("*/bin/initdb")), key=_version_key)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb and Path(initdb).with_name("postgres").exists():
        return Path(initdb).parent
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _server_user() -> dict[str, Any]:
    """Popen arguments that drop root to the postgres system user (creating it if needed)."""
    if os.geteuid() != 0:
        return {}
    try:
        pw = pwd.getpwnam("postgres")
    except KeyError:
        subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
                        "--shell", "/usr/sbin/nologin", "postgres"], check=True, capture_output=True)
        pw = pwd.getpwnam("postgres")
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}


def _log_tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-3000:]
    except OSError:
        return "(no log)"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    bindir = find_pg_bindir()
    if bindir is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL server binaries (initdb) not found, and CI must run the postgres tests: "
                        "install the Debian package 'postgresql'")
        pytest.skip("PostgreSQL server binaries (initdb) not found; install 'postgresql' to run these tests")
    import psycopg

    base = Path(tempfile.mkdtemp(prefix="ckpg-"))  # short: the socket path must fit in sun_path (108 bytes)
    as_user = _server_user()
    if as_user:
        os.chown(base, as_user["user"], as_user["group"])
    data, log_path = base / "data", base / "postgres.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(LC_ALL="C", LANG="C")
    proc: subprocess.Popen[bytes] | None = None
    try:
        init = subprocess.run([str(bindir / "initdb"), "-D", str(data), "-U", PG_USER, "--auth=trust",
                               "--encoding=UTF8", "--no-locale", "--no-sync"],
                              cwd=base, env=env, capture_output=True, timeout=120, **as_user)
        if init.returncode != 0:
            pytest.fail(f"initdb failed ({init.returncode}): {init.stderr.decode(errors='replace')[-2000:]}")
        port = _free_port()
        with open(log_path, "wb") as log:
            # Durability settings off: these are throwaway test clusters (the ledger's own guarantees are
            # transactional and do not depend on them).
            proc = subprocess.Popen(
                [str(bindir / "postgres"), "-D", str(data), "-k", str(base), "-h", "127.0.0.1", "-p", str(port),
                 "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                 "-c", "max_connections=60"],
                cwd=base, env=env, stdout=log, stderr=subprocess.STDOUT, **as_user)
        admin = f"postgresql://{PG_USER}@/postgres?host={base}&port={port}"
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"postgres exited with {proc.returncode} at start-up:\n{_log_tail(log_path)}")
            try:
                with psycopg.connect(admin, autocommit=True, connect_timeout=2) as conn:
                    conn.execute(f"CREATE DATABASE {PG_DB}")
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    pytest.fail(f"postgres did not become ready in {STARTUP_TIMEOUT_S:.0f} s:\n{_log_tail(log_path)}")
                time.sleep(0.1)
        yield f"postgresql://{PG_USER}@/{PG_DB}?host={base}&port={port}"
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # "fast shutdown": roll back open transactions, disconnect clients
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def pg_url(postgres_url: str) -> Iterator[str]:
    """A URL whose connections work in a fresh schema of their own (cheap isolation between tests)."""
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    yield f"{postgres_url}&options=-csearch_path%3D{schema}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same ledger tests on both databases."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/ledger.db"
    return str(request.getfixturevalue("pg_url"))


class Clock:
    """A settable clock for the ledger and journal (Unix seconds)."""

    def __init__(self, start: float = 1_750_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()
