"""One contract for every artifact store: the local folder and S3 against a real server.

The S3 half runs against SeaweedFS on loopback (`tests/service_s3.py`) with signed requests,
so auth, multipart, presigned URLs and a server going away are all the real thing.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import pickle
import time
import urllib.error
import urllib.request
from datetime import timedelta
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from pydantic import SecretStr

from flows.settings import Settings
from tasks import runtime
from tasks.store import (LocalStore, S3Config, Store, StoreError, StoreUnavailable, make_ref,
                         open_store, retry_io)
from tasks.store_s3 import S3Store
from tests.service_s3 import S3Server, free_base_port


def _s3_config(**changes: object) -> S3Config:
    config = Settings().s3_config()
    assert config is not None, "s3_store_url should have pointed FOLEY_STORE_URL at S3"
    return dataclasses.replace(config, **changes)


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """Each store under test, empty."""
    if request.param == "local":
        return open_store(str(tmp_path / "store"))
    url = request.getfixturevalue("s3_store_url")
    return open_store(url, s3=_s3_config())


def _file(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def _stored_objects(store: Store, request: pytest.FixtureRequest) -> list[str]:
    """Every object the store holds, listed behind its back."""
    if isinstance(store, LocalStore):
        return [str(p) for p in store.root.rglob("*") if p.is_file()]
    assert isinstance(store, S3Store)
    client = request.getfixturevalue("s3_server").client()
    return [o.object_name for o in client.list_objects(store.bucket, store.prefix + "/",
                                                      recursive=True)]


def _overwrite(store: Store, ref: dict, data: bytes, request: pytest.FixtureRequest) -> None:
    """Replace an artifact's bytes behind the store's back."""
    if isinstance(store, LocalStore):
        path = Path(unquote(urlparse(ref["uri"]).path))
        with open(path, "r+b") as f:  # in place: same inode, same size
            f.write(data)
        return
    assert isinstance(store, S3Store)
    import io

    client = request.getfixturevalue("s3_server").client()
    client.put_object(store.bucket, store.key_of(ref), io.BytesIO(data), len(data))


def _chain(e: BaseException) -> str:
    """The text of an exception and everything it was raised from."""
    parts = []
    while e is not None:
        parts.append(f"{e!r} {e}")
        e = e.__cause__ or e.__context__
    return "\n".join(parts)


# -- the contract, for both stores --------------------------------------------------------------

def test_same_bytes_same_ref_one_object(store: Store, tmp_path: Path,
                                        request: pytest.FixtureRequest) -> None:
    a = _file(tmp_path, "a.wav", b"RIFF step on gravel")
    b = _file(tmp_path, "copy of a.WAV", b"RIFF step on gravel")  # other name, same bytes
    r1, r2, r3 = store.put_file(a), store.put_file(a), store.put_file(b)
    assert r1 == r2 == r3
    assert r1["sha256"] == hashlib.sha256(b"RIFF step on gravel").hexdigest()
    assert r1["bytes"] == 19 and r1["mime"] == "audio/wav"
    assert r1["uri"].endswith(f"/{r1['sha256'][:2]}/{r1['sha256'][2:4]}/{r1['sha256']}.wav")
    assert len(_stored_objects(store, request)) == 1


def test_different_content_different_keys(store: Store, tmp_path: Path,
                                          request: pytest.FixtureRequest) -> None:
    r1 = store.put_file(_file(tmp_path, "x.json", b'{"v": 1}'))
    r2 = store.put_file(_file(tmp_path, "y.json", b'{"v": 2}'))
    assert r1["uri"] != r2["uri"] and r1["sha256"] != r2["sha256"]
    assert len(_stored_objects(store, request)) == 2
    assert store.local_path(r1).read_bytes() == b'{"v": 1}'
    assert store.local_path(r2).read_bytes() == b'{"v": 2}'


def test_local_path_returns_identical_bytes(store: Store, tmp_path: Path) -> None:
    data = os.urandom(300_000)
    ref = store.put_file(_file(tmp_path, "stem.wav", data), "audio/wav")
    p = store.local_path(ref)
    assert p.read_bytes() == data and p.suffix == ".wav"
    assert store.local_path(ref) == p  # second read: same file, no new download


def test_corrupted_object_is_refused(store: Store, tmp_path: Path,
                                     request: pytest.FixtureRequest) -> None:
    ref = store.put_file(_file(tmp_path, "env.json", b'{"curve": [0.1, 0.2]}'))
    _overwrite(store, ref, b'{"curve": [0.9, 0.2]}', request)  # same size, other bytes
    with pytest.raises(StoreError, match="integrity check") as err:
        store.local_path(ref)
    assert ref["sha256"] in str(err.value)  # names the object


def test_an_object_of_another_size_is_refused(store: Store, tmp_path: Path,
                                             request: pytest.FixtureRequest) -> None:
    """Changed behind the store and longer: refused as the same-size change is (on S3 from
    the HEAD's size, before anything is downloaded), naming the object."""
    ref = store.put_file(_file(tmp_path, "env2.json", b'{"curve": [0.1, 0.2]}'))
    _overwrite(store, ref, b'{"curve": [0.1, 0.2, 0.3]}', request)
    with pytest.raises(StoreError, match="is 26 bytes, expected 21: it was changed") as err:
        store.local_path(ref)
    assert ref["sha256"] in str(err.value)


def test_exists(store: Store, tmp_path: Path) -> None:
    ref = store.put_file(_file(tmp_path, "a.txt", b"present"))
    assert store.exists(ref)
    ghost_sha = hashlib.sha256(b"never stored").hexdigest()
    ghost = make_ref(ref["uri"].replace(ref["sha256"], ghost_sha), ghost_sha, 12, "text/plain")
    assert not store.exists(ghost)
    with pytest.raises(StoreError, match="missing"):
        store.local_path(ghost)


@pytest.mark.parametrize("name", ["Schritte auf Kies ü 01.wav", "pas dans l'herbe (take 2).aif",
                                  "足音 テイク.json", "no suffix"])
def test_unicode_and_space_names(store: Store, tmp_path: Path, name: str) -> None:
    data = name.encode() * 100
    ref = store.put_file(_file(tmp_path, name, data))
    assert store.local_path(ref).read_bytes() == data
    assert store.exists(ref)
    assert " " not in ref["uri"]  # content-addressed keys: the name never reaches the key


def test_large_file_round_trips(store: Store, tmp_path: Path,
                                request: pytest.FixtureRequest) -> None:
    big = tmp_path / "reel_foley_foa.wav"
    with open(big, "wb") as f:
        for _ in range(40):
            f.write(os.urandom(1 << 20))
    ref = store.put_file(big)
    assert ref["bytes"] == 40 << 20
    if isinstance(store, S3Store):  # 40 MiB in 16 MiB parts: a multipart ETag "<md5>-3"
        stat = request.getfixturevalue("s3_server").client().stat_object(
            store.bucket, store.key_of(ref))
        assert stat.etag.endswith("-3"), stat.etag
        assert stat.metadata["x-amz-meta-sha256"] == ref["sha256"]
    p = store.local_path(ref)
    assert p.stat().st_size == 40 << 20
    assert hashlib.sha256(p.read_bytes()).hexdigest() == ref["sha256"]


def test_presigned_url_fetches_then_expires(store: Store, tmp_path: Path) -> None:
    ref = store.put_file(_file(tmp_path, "preview.json", b'{"shot": "SH010"}'))
    url = store.presigned_url(ref, expires=timedelta(seconds=2))
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.read() == b'{"shot": "SH010"}'
    if isinstance(store, LocalStore):
        assert url.startswith("file://")  # a folder needs no signature and never expires
        return
    time.sleep(3.5)
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(url, timeout=10)
    assert err.value.code == 403


# -- S3 only: credentials, privacy, outages, settings -------------------------------------------

def test_wrong_keys_rejected_without_leaking(s3_store_url: str, s3_server: S3Server,
                                            tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    wrong = "not-the-secret-" + os.urandom(6).hex()
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", wrong)
    settings = Settings()
    bad = open_store(s3_store_url, s3=settings.s3_config())
    with pytest.raises(StoreError) as err:
        bad.put_file(_file(tmp_path, "a.txt", b"x"))
    assert not isinstance(err.value, StoreUnavailable)  # retrying would not help
    text = _chain(err.value) + repr(bad) + repr(settings) + repr(settings.s3_config())
    assert "AWS_SECRET_ACCESS_KEY" in str(err.value) and s3_server.endpoint in str(err.value)
    assert wrong not in text and s3_server.secret_key not in text


def test_bucket_is_private(s3_store_url: str, s3_server: S3Server, tmp_path: Path) -> None:
    from minio import Minio
    from minio.error import S3Error

    store = open_store(s3_store_url, s3=_s3_config())
    assert isinstance(store, S3Store)
    ref = store.put_file(_file(tmp_path, "a.txt", b"private"))
    assert s3_store_url in ref["uri"] and s3_server.secret_key not in ref["uri"]
    with pytest.raises(S3Error, match="NoSuchBucketPolicy"):
        s3_server.client().get_bucket_policy(store.bucket)
    anonymous = Minio(s3_server.endpoint.removeprefix("http://"), secure=False,
                      region=s3_server.region)
    with pytest.raises(S3Error, match="AccessDenied"):
        anonymous.get_object(store.bucket, store.key_of(ref))


def test_outage_is_bounded_and_recoverable(s3_store_url: str, s3_server: S3Server,
                                           tmp_path: Path) -> None:
    store = open_store(s3_store_url, s3=_s3_config(attempts=3, backoff_base_s=0.1,
                                                   backoff_max_s=0.2, connect_timeout_s=1.0))
    before = store.put_file(_file(tmp_path, "before.wav", b"done before the outage"))
    s3_server.stop()
    try:
        later = _file(tmp_path, "later.wav", b"written after the outage")
        for attempt in (lambda: store.put_file(later), lambda: store.local_path(before),
                        lambda: store.exists(before)):
            t0 = time.monotonic()
            with pytest.raises(StoreUnavailable) as err:
                attempt()
            assert time.monotonic() - t0 < 10  # bounded: 3 tries, 0.1 + 0.2 s apart
            msg = str(err.value)
            assert s3_server.endpoint in msg and "after 3 attempts" in msg
            assert "completed work is kept" in msg and s3_server.secret_key not in _chain(err.value)
    finally:
        s3_server.start()
    ref = store.put_file(later)  # the same store object works again
    assert store.local_path(ref).read_bytes() == b"written after the outage"
    assert store.local_path(before).read_bytes() == b"done before the outage"


def test_a_server_out_of_space_is_named_as_failing_not_unreachable(
        s3_server: S3Server, tmp_path: Path) -> None:
    """A real server with no room for another bucket (SeaweedFS: every bucket takes a volume,
    this one has two and its readiness bucket holds one) answers InternalError to every write:
    the error says the server kept failing, what was being written and where to look."""
    starved = S3Server(exe=s3_server.exe, root=tmp_path / "starved", base_port=free_base_port(),
                       volume_slots=2)
    starved.root.mkdir()
    starved.start()
    try:
        config = S3Config(endpoint=starved.endpoint, access_key=starved.access_key,
                          secret_key=SecretStr(starved.secret_key), region=starved.region,
                          cache_dir=tmp_path / "cache", attempts=2, backoff_base_s=0.1)
        stores = [S3Store(f"foley-full-{i}", "run", config) for i in range(2)]
        stores[0].put_file(_file(tmp_path, "first.wav", b"the one bucket that fits"))
        with pytest.raises(StoreUnavailable) as err:
            stores[1].put_file(_file(tmp_path, "second.wav", b"no volume left for it"))
        msg = str(err.value)
        assert err.value.answered and "unreachable" not in msg, msg
        assert f"S3 endpoint {starved.endpoint} kept failing after 2 attempts" in msg, msg
        assert "s3://foley-full-1/run/" in msg and "InternalError" in msg, msg
        assert "check the server's log" in msg and "completed work is kept" in msg, msg
        assert starved.secret_key not in _chain(err.value)
    finally:
        starved.stop(grace_s=3)


def test_settings_and_runtime_open_the_s3_store(s3_store_url: str, s3_server: S3Server,
                                                tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FOLEY_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://generic.invalid:1")  # the S3-specific wins
    monkeypatch.delenv("FOLEY_S3_CACHE_DIR")
    settings = Settings()
    config = settings.s3_config()
    assert config is not None and config.endpoint == s3_server.endpoint
    assert config.cache_dir == (tmp_path / "home" / "cache" / "s3").resolve()
    assert config.part_size == 16 << 20 and config.region == s3_server.region
    assert s3_server.secret_key not in repr(settings) + repr(config)
    settings.configure_runtime()
    try:
        store = runtime.store()
        assert isinstance(store, S3Store) and store.url == s3_store_url
        ref = store.put_file(_file(tmp_path, "a.txt", b"via runtime"))
        assert store.local_path(ref).is_relative_to(config.cache_dir)
    finally:
        runtime.configure(settings.resolved_db_url(), str(tmp_path / "local-store"))


def test_settings_for_a_folder_store_need_no_s3() -> None:
    assert Settings(store_url="/tmp/x", s3_access_key_id="only-half").s3_config() is None
    with pytest.raises(ValueError, match="AWS_SECRET_ACCESS_KEY"):
        Settings(store_url="s3://b/p", s3_access_key_id="only-half",
                 s3_secret_access_key=None).s3_config()


def test_bench_store_reports_throughput(s3_store_url: str, s3_server: S3Server) -> None:
    from flows.bench_store import bench_store

    store = open_store(s3_store_url, s3=_s3_config())
    assert isinstance(store, S3Store)
    result = bench_store(store, s3_server.client(), 8 << 20)
    print("bench_store 8 MiB:", {k: round(v, 2) for k, v in result.items()})
    for key in ("store_put_mb_s", "store_get_mb_s", "sdk_put_mb_s", "sdk_get_mb_s",
                "put_ratio", "get_ratio"):
        assert result[key] > 0, key


# -- the retry helper ------------------------------------------------------------------------

def test_retry_io_backs_off_boundedly_then_explains() -> None:
    waits: list[float] = []
    calls = 0

    def down() -> None:
        nonlocal calls
        calls += 1
        raise StoreUnavailable("refused", endpoint="http://127.0.0.1:9", reason="refused")

    with pytest.raises(StoreUnavailable, match=r"http://127.0.0.1:9 unreachable after 6 attempts"
                       ) as err:
        retry_io(down, attempts=6, base=0.5, max_delay=4, sleep=waits.append)
    assert calls == 6 and waits == [0.5, 1, 2, 4, 4]
    again = pickle.loads(pickle.dumps(err.value))  # Prefect ships task errors between processes
    assert str(again) == str(err.value) and again.endpoint == "http://127.0.0.1:9"


def test_retry_io_recovers_and_passes_other_errors() -> None:
    outcomes = iter([StoreUnavailable("x", endpoint="e"), StoreUnavailable("x", endpoint="e"), 7])

    def flaky() -> int:
        o = next(outcomes)
        if isinstance(o, Exception):
            raise o
        return o

    def corrupt() -> None:
        raise StoreError("integrity check failed")

    assert retry_io(flaky, sleep=lambda s: None) == 7
    with pytest.raises(StoreError, match="integrity"):  # not retried: no sleep at all
        retry_io(corrupt, sleep=lambda s: pytest.fail("retried a permanent error"))
