"""Real services for integration tests, started on free loopback ports and stopped after.

moto_server (S3-compatible endpoint), `mlflow server` (sqlite or PostgreSQL backend, S3 artifact
store on moto) and PostgreSQL from Debian's package (initdb + pg_ctl as the postgres user).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 90.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server for {url} exited with {proc.returncode}")
        try:
            if requests.get(url, timeout=2).status_code < 500:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


@dataclass
class Service:
    url: str
    proc: subprocess.Popen
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


def start(cmd: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        cmd,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )


def start_moto(workdir: Path) -> Service:
    port = free_port()
    log = workdir / "moto.log"
    proc = start([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], log)
    url = f"http://127.0.0.1:{port}"
    wait_http(url, 60, proc)
    return Service(url, proc, log)


def start_mlflow(
    workdir: Path,
    backend_uri: str | None = None,
    s3_endpoint: str | None = None,
    bucket: str = "mlflow-artifacts",
    port: int | None = None,
) -> Service:
    port = port or free_port()
    backend_uri = backend_uri or f"sqlite:///{workdir / 'mlflow.db'}"
    cmd = [
        str(BIN / "mlflow"),
        "server",
        "--backend-store-uri",
        backend_uri,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    env = {"MLFLOW_DISABLE_TELEMETRY": "true"}
    if s3_endpoint:
        cmd += ["--artifacts-destination", f"s3://{bucket}/"]
        env["MLFLOW_S3_ENDPOINT_URL"] = s3_endpoint
    else:
        cmd += ["--artifacts-destination", str(workdir / "artifacts")]
    log = workdir / f"mlflow-{port}.log"
    proc = start(cmd, log, env)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/health", 120, proc)
    return Service(url, proc, log)


def postgres_bin() -> Path | None:
    for d in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (d / "initdb").exists():
            return d
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def start_postgres(workdir: Path) -> Service:
    """A throwaway cluster (trust auth on 127.0.0.1) as the postgres user."""
    pg = postgres_bin()
    if pg is None:
        raise RuntimeError("PostgreSQL server binaries not found (apt-get install postgresql)")
    data = workdir / "pgdata"
    data.mkdir(parents=True)
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(workdir, "postgres")
        shutil.chown(data, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    subprocess.run(
        [
            *as_user,
            str(pg / "initdb"),
            "-D",
            str(data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        ],
        check=True,
        capture_output=True,
    )
    port = free_port()
    log = workdir / "postgres.log"
    proc = subprocess.Popen(
        [
            *as_user,
            str(pg / "postgres"),
            "-D",
            str(data),
            "-p",
            str(port),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"unix_socket_directories={data}",
            "-c",
            "fsync=off",
        ],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"postgresql+psycopg2://postgres@127.0.0.1:{port}"
    import psycopg2

    deadline = time.time() + 60
    while True:
        try:
            psycopg2.connect(
                host="127.0.0.1", port=port, user="postgres", dbname="postgres"
            ).close()
            break
        except psycopg2.OperationalError:
            if time.time() > deadline or proc.poll() is not None:
                raise RuntimeError(f"PostgreSQL did not start: {log.read_text()[-500:]}") from None
            time.sleep(0.3)
    return Service(url, proc, log)


def create_database(pg_url: str, name: str) -> str:
    import psycopg2

    port = int(pg_url.rsplit(":", 1)[1])
    conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    return f"{pg_url}/{name}"
