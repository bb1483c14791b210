"""An S3 endpoint that takes the connection and never answers (a hung server, or something that
is not S3 on the port) fails a store call after a couple of short waits with the clear
StoreUnavailable, not after the full retry budget of read timeouts; a slow transfer that keeps
moving is not mistaken for one.

The servers here are plain sockets on 127.0.0.1 in a thread; the timeouts come small through
the S3Config, and the tests count the connections the server took (the attempts made).
"""
from __future__ import annotations

import hashlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from tasks.store import S3Config, StoreUnavailable, make_ref, object_key
from tasks.store_s3 import S3Store

BUCKET = "foley"


class Listener:
    """A TCP server on 127.0.0.1 that hands each connection to `serve` in its own thread
    (default: keep it open and never send a byte)."""

    def __init__(self, serve: Callable[[socket.socket], None] | None = None) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.endpoint = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.serve = serve or (lambda conn: None)
        self.accepted = 0
        self.conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            self.conns.append(conn)
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for c in [*self.conns, self.sock]:
            c.close()


@pytest.fixture
def hung() -> Iterator[Listener]:
    server = Listener()
    yield server
    server.close()


def _store(endpoint: str, tmp_path: Path, **changes: object) -> S3Store:
    config = S3Config(endpoint=endpoint, access_key="foley", secret_key=SecretStr("not-a-secret"),
                      cache_dir=tmp_path / "cache", attempts=6, backoff_base_s=0.01,
                      backoff_max_s=0.02, connect_timeout_s=1.0, **changes)
    return S3Store(BUCKET, "art", config)


def _ref(store: S3Store, data: bytes, suffix: str = ".wav") -> dict:
    sha = hashlib.sha256(data).hexdigest()
    return make_ref(store._uri(store._key(object_key(sha, suffix))), sha, len(data), "audio/wav")


def test_hung_endpoint_fails_after_two_attempts_with_the_clear_error(hung: Listener,
                                                                     tmp_path: Path) -> None:
    # only the settings every version has: read timeout 0.5 s, a budget of 6 attempts
    store = _store(hung.endpoint, tmp_path, read_timeout_s=0.5)
    (tmp_path / "a.wav").write_bytes(b"RIFF a step")
    ref = _ref(store, b"RIFF a step")
    for call in (lambda: store.put_file(tmp_path / "a.wav"), lambda: store.local_path(ref),
                 lambda: store.exists(ref)):
        before, t0 = hung.accepted, time.monotonic()
        with pytest.raises(StoreUnavailable) as err:
            call()
        took = time.monotonic() - t0
        msg = str(err.value)
        assert hung.accepted - before == 2, msg  # two tries, not the whole budget of six
        assert err.value.hung and err.value.endpoint == hung.endpoint
        assert f"S3 endpoint {hung.endpoint} unreachable" in msg
        assert "accepts connections but never answers" in msg and "after 2 attempts" in msg
        assert "check the server and rerun — completed work is kept" in msg
        assert "not-a-secret" not in msg
        assert took < 2 * 0.5 + 3  # two read timeouts, one short backoff (a loose bound)


def test_a_call_to_a_hung_server_waits_the_head_timeout_not_the_read_timeout(
        hung: Listener, tmp_path: Path) -> None:
    store = _store(hung.endpoint, tmp_path, read_timeout_s=30.0, head_timeout_s=0.3)
    ref = _ref(store, b"RIFF a step")
    for call in (lambda: store.exists(ref), lambda: store.local_path(ref)):
        before, t0 = hung.accepted, time.monotonic()
        with pytest.raises(StoreUnavailable, match=r"after 2 attempts") as err:
            call()
        assert hung.accepted - before == 2
        assert "read timeout=0.3" in err.value.reason, err.value.reason
        assert time.monotonic() - t0 < 5  # never one 30 s read timeout


def test_the_waits_are_settings(hung: Listener, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    """FOLEY_S3_* reach the store the pass opens: a store slow to answer a stat can be given
    a longer HEAD wait, or more tries, without touching the code."""
    from flows.settings import Settings

    for name, value in {"FOLEY_HOME": str(tmp_path / "home"),
                        "FOLEY_STORE_URL": f"s3://{BUCKET}/art",
                        "AWS_ENDPOINT_URL_S3": hung.endpoint, "AWS_ACCESS_KEY_ID": "foley",
                        "AWS_SECRET_ACCESS_KEY": "not-a-secret", "FOLEY_RETRY_MAX_DELAY_S": "0.02",
                        "FOLEY_S3_CONNECT_TIMEOUT_S": "1", "FOLEY_S3_HEAD_TIMEOUT_S": "0.3",
                        "FOLEY_S3_READ_TIMEOUT_S": "30", "FOLEY_S3_HUNG_ATTEMPTS": "3"}.items():
        monkeypatch.setenv(name, value)
    config = Settings().s3_config()
    assert config is not None
    assert (config.connect_timeout_s, config.head_timeout_s, config.read_timeout_s,
            config.hung_attempts) == (1.0, 0.3, 30.0, 3)
    store = S3Store(BUCKET, "art", config)
    before, t0 = hung.accepted, time.monotonic()
    with pytest.raises(StoreUnavailable, match=r"after 3 attempts"):
        store.exists(_ref(store, b"RIFF a step"))
    assert hung.accepted - before == 3
    assert time.monotonic() - t0 < 10  # three 0.3 s HEAD waits, never one 30 s read timeout
    # the HEAD never waits longer than a transfer's read, and hung tries stay within the budget
    monkeypatch.setenv("FOLEY_S3_HEAD_TIMEOUT_S", "90")
    monkeypatch.setenv("FOLEY_RETRY_ATTEMPTS", "2")
    config = Settings().s3_config()
    assert config is not None and (config.head_timeout_s, config.hung_attempts) == (30.0, 2)


def _answer(data: bytes, gap_s: float, pieces: int, stall_after: int | None = None,
            methods: list[str] | None = None) -> Callable[[socket.socket], None]:
    """Answer a HEAD with the object's headers, and a GET with them at once and then the body
    in `pieces`, `gap_s` apart (stopping for good after `stall_after` pieces, if given); each
    request's method is appended to `methods`."""

    def serve(conn: socket.socket) -> None:
        request = b""
        while b"\r\n\r\n" not in request:
            chunk = conn.recv(65536)
            if not chunk:
                return
            request += chunk
        method = request.split(b" ", 1)[0].decode()
        if methods is not None:
            methods.append(method)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: audio/wav\r\n"
                     b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(data))
        if method != "GET":
            return
        step = -(-len(data) // pieces)
        for i in range(pieces):
            if stall_after is not None and i == stall_after:
                return  # keep the connection open, send nothing more
            time.sleep(gap_s)
            conn.sendall(data[i * step:(i + 1) * step])

    return serve


def test_a_slow_download_that_keeps_moving_completes(tmp_path: Path) -> None:
    data = bytes(range(256)) * 400  # 100 KiB in 5 pieces, 0.4 s apart: 2 s in all
    methods: list[str] = []
    server = Listener(_answer(data, gap_s=0.4, pieces=5, methods=methods))
    try:
        # each gap is longer than the head timeout and the whole transfer longer than the read
        # timeout: only a silence of more than 1 s between two reads may fail it
        store = _store(server.endpoint, tmp_path, read_timeout_s=1.0, head_timeout_s=0.2)
        assert store.local_path(_ref(store, data)).read_bytes() == data
        assert methods == ["HEAD", "GET"]
    finally:
        server.close()


def test_a_download_that_stops_midway_is_a_hung_server(tmp_path: Path) -> None:
    data = bytes(range(256)) * 400
    methods: list[str] = []
    server = Listener(_answer(data, gap_s=0.05, pieces=5, stall_after=2, methods=methods))
    try:
        store = _store(server.endpoint, tmp_path, read_timeout_s=0.5, head_timeout_s=0.2)
        with pytest.raises(StoreUnavailable, match="never answers.* after 2 attempts") as err:
            store.local_path(_ref(store, data))
        assert err.value.hung and methods == ["HEAD", "GET", "GET"]
        assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]  # nothing kept
    finally:
        server.close()
