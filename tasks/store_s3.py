"""The studio artifact store: content-addressed objects in an S3 / MinIO bucket.

Same keys as the local folder (`<prefix>/ab/cd/<sha256><suffix>`), so a put of bytes already
there is a stat and nothing more. Reads download into a local cache folder (temporary name,
then rename) and check the sha256 on the way in. A server that does not answer surfaces as
`StoreUnavailable` after bounded retries (fewer for one that takes the connection and never
answers; every call starts with a HEAD, which waits `head_timeout_s` for its answer, while a
transfer waits `read_timeout_s` per socket read); credentials never appear in refs, reprs or
errors.
"""
from __future__ import annotations

import hashlib
import os
import socket
import tempfile
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote, unquote, urlparse

import certifi
import urllib3
from minio import Minio
from minio.error import InvalidResponseError, S3Error, ServerError

from tasks.store import (CHUNK, ArtifactRef, S3Config, StoreError, StoreUnavailable,
                         VerifiedFiles, guess_mime, make_ref, object_key, retry_io, sha256_file)

T = TypeVar("T")

# Codes meaning "these credentials may not do this": retrying cannot help, a person must.
_DENIED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken",
           "ExpiredToken", "AllAccessDisabled"}
# Codes meaning "the server is busy or broken right now": worth another try.
_BUSY = {"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout"}
_MISSING = {"NoSuchKey", "NoSuchBucket", "NoSuchObject"}


class _Missing(StoreError):
    """The object (or its bucket) is not there."""


def split_endpoint(endpoint: str | None) -> tuple[str, str, bool]:
    """`(display URL, host[:port], secure)` of an endpoint URL; any userinfo is dropped."""
    if not endpoint:
        return "https://s3.amazonaws.com", "s3.amazonaws.com", True
    u = urlparse(endpoint)
    if u.scheme not in ("http", "https") or not u.hostname or u.path.strip("/"):
        raise ValueError(f"S3 endpoint must look like http(s)://host[:port], got {u.scheme}://"
                         f"{u.hostname or ''}{u.path}")
    host = f"{u.hostname}:{u.port}" if u.port else u.hostname
    return f"{u.scheme}://{host}", host, u.scheme == "https"


class _TimedPool(urllib3.PoolManager):
    """A pool that waits at most `head` (a urllib3 Timeout) for the answer to a HEAD.

    A read timeout bounds each socket read, so a transfer that keeps moving never trips it;
    what it cannot tell apart is a server that never answers. A HEAD (a stat, a bucket check:
    every store call starts with one) asks for nothing the server must compute or move, so it
    gets a short wait and a hung server shows itself there; transfers (GET, PUT, POST: the
    multipart calls, answered only once the parts are written) keep the full read timeout."""

    def __init__(self, *, head: urllib3.Timeout, **kw: object) -> None:
        super().__init__(**kw)
        self._head = head

    def urlopen(self, method: str, url: str, redirect: bool = True,
                **kw: object) -> urllib3.BaseHTTPResponse:
        if method == "HEAD":
            kw.setdefault("timeout", self._head)
        return super().urlopen(method, url, redirect=redirect, **kw)


def make_client(config: S3Config) -> Minio:
    """A minio client that fails fast (no hidden urllib3 retries: `retry_io` owns the backoff)."""
    _, host, secure = split_endpoint(config.endpoint)
    http = _TimedPool(
        timeout=urllib3.Timeout(connect=config.connect_timeout_s, read=config.read_timeout_s),
        head=urllib3.Timeout(connect=config.connect_timeout_s,
                             read=min(config.head_timeout_s, config.read_timeout_s)),
        maxsize=10, cert_reqs="CERT_REQUIRED",
        ca_certs=str(config.ca_bundle) if config.ca_bundle else certifi.where(),
        retries=urllib3.Retry(total=0, redirect=False))
    secret = config.secret_key.get_secret_value() if config.secret_key else None
    return Minio(host, access_key=config.access_key, secret_key=secret, secure=secure,
                 region=config.region, http_client=http)


def _hung(e: BaseException) -> bool:
    """The server took the connection but sent nothing back in time: a read timeout (waiting
    for an answer or for more of a body), or a send that stalled because it stopped reading.
    A connect timeout is not one (nothing took the connection: unreachable)."""
    chain, stack = [], [e]
    while stack:
        x = stack.pop()
        if x is None or any(x is c for c in chain):
            continue
        chain.append(x)
        if isinstance(x, urllib3.exceptions.MaxRetryError):
            stack.append(x.reason)
        if isinstance(x, urllib3.exceptions.ProtocolError):  # ("Connection aborted.", cause)
            stack.extend(a for a in x.args if isinstance(a, BaseException))
        stack += [x.__cause__, x.__context__]
    if any(isinstance(x, (urllib3.exceptions.ConnectTimeoutError,
                          urllib3.exceptions.NewConnectionError)) for x in chain):
        return False
    return any(isinstance(x, (urllib3.exceptions.ReadTimeoutError, socket.timeout))
               for x in chain)


def _reason(e: BaseException) -> str:
    """A one-line cause without urllib3's object reprs."""
    if isinstance(e, urllib3.exceptions.MaxRetryError) and e.reason is not None:
        e = e.reason
    text = str(e)
    if text.startswith("<") and ">: " in text:  # "<HTTPConnection object at 0x…>: Failed …"
        text = text.split(">: ", 1)[1]
    return f"{type(e).__name__}: {text}"


class S3Store:
    """Artifacts as objects under `s3://bucket/prefix`, read through a local cache folder."""

    def __init__(self, bucket: str, prefix: str, config: S3Config) -> None:
        self.bucket, self.prefix, self.config = bucket, prefix.strip("/"), config
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self.endpoint = split_endpoint(config.endpoint)[0]
        self.cache_dir = Path(config.cache_dir).resolve() / bucket
        self.client = make_client(config)
        self._verified = VerifiedFiles()
        self._bucket_ready = False
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"S3Store({self.url!r}, endpoint={self.endpoint!r})"

    # -- the Store protocol -------------------------------------------------------------------

    def put_file(self, path: str | Path, mime: str | None = None) -> ArtifactRef:
        """Upload `path` under its content key (multipart when large); a no-op if it is there."""
        path = Path(path)
        sha, size, mime = sha256_file(path), path.stat().st_size, mime or guess_mime(path)
        key = self._key(object_key(sha, path.suffix))
        self._ensure_bucket()
        if self._size(key) != size:
            self._io(lambda: self.client.fput_object(
                self.bucket, key, str(path), content_type=mime, metadata={"sha256": sha},
                part_size=self.config.part_size), self._uri(key))
        return make_ref(self._uri(key), sha, size, mime)

    def local_path(self, ref: ArtifactRef) -> Path:
        """A cached local copy of the artifact, downloaded and sha256-checked if needed."""
        key = self.key_of(ref)
        dest = self.cache_dir / key
        if dest.exists() and dest.stat().st_size == ref["bytes"]:
            try:
                self._verified.check(dest, ref, f"{self._uri(key)} (cached at {dest})")
                return dest
            except StoreError:
                dest.unlink(missing_ok=True)  # a damaged cache copy is fetched again
        dest.parent.mkdir(parents=True, exist_ok=True)
        missing = StoreError(f"artifact {self._uri(key)} is missing from the store "
                             f"(endpoint {self.endpoint})")
        # a HEAD first: a hung server fails it within the short head timeout, where the GET
        # would wait the full read timeout for its answer
        size = self._size(key)
        if size is None:
            raise missing
        if size != ref["bytes"]:  # no need to download it to know it is not the artifact
            raise StoreError(
                f"artifact {self._uri(key)} is {size} bytes, expected {ref['bytes']}: it was "
                "changed behind the store; rerun the stage that made it")
        try:
            self._io(lambda: self._download(key, dest, ref), self._uri(key))
        except _Missing:
            raise missing from None
        return dest

    def exists(self, ref: ArtifactRef) -> bool:
        return self._size(self.key_of(ref)) == ref["bytes"]

    def presigned_url(self, ref: ArtifactRef, expires: timedelta = timedelta(hours=1)) -> str:
        """A time-limited GET URL (for the review app's browser); computed locally."""
        key = self.key_of(ref)
        return self._io(lambda: self.client.presigned_get_object(self.bucket, key, expires),
                        self._uri(key))

    # -- plumbing -----------------------------------------------------------------------------

    def _key(self, rel: str) -> str:
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def _uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{quote(key, safe='/')}"

    def key_of(self, ref: ArtifactRef) -> str:
        """The object key of a ref in this store's bucket (any prefix: reads are hash-checked)."""
        u = urlparse(ref["uri"])
        key = unquote(u.path).lstrip("/")
        if u.scheme != "s3" or u.netloc != self.bucket:
            raise StoreError(f"{ref['uri']} is not in the store's bucket {self.url}")
        if any(part in ("", ".", "..") for part in key.split("/")):  # would escape the cache
            raise StoreError(f"{ref['uri']} is not a valid artifact key")
        return key

    def _io(self, fn: Callable[[], T], what: str) -> T:
        """Run one S3 call with this store's retry budget and error translation."""
        c = self.config
        return retry_io(lambda: self._translate(fn, what), attempts=c.attempts,
                        base=c.backoff_base_s, max_delay=c.backoff_max_s,
                        hung_attempts=c.hung_attempts)

    def _translate(self, fn: Callable[[], T], what: str) -> T:
        """Map minio / urllib3 failures onto StoreError (permanent) or StoreUnavailable."""
        try:
            return fn()
        except S3Error as e:
            if e.code in _MISSING:
                raise _Missing(f"{what} not found") from e
            if e.code in _DENIED:
                raise StoreError(
                    f"S3 endpoint {self.endpoint} refused {what} ({e.code}): check "
                    "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and that the key may use bucket "
                    f"{self.bucket!r}") from e
            if e.code in _BUSY or e.response.status >= 500:
                reason = f"{what}: {e.code} {e.message}"
                raise StoreUnavailable(f"S3 endpoint {self.endpoint} failed: {reason}",
                                       endpoint=self.endpoint, reason=reason,
                                       answered=True) from e
            raise StoreError(f"S3 endpoint {self.endpoint}: {what}: {e.code} {e.message}") from e
        except (ServerError, InvalidResponseError, urllib3.exceptions.HTTPError,
                ConnectionError, TimeoutError) as e:
            reason = _reason(e)
            raise StoreUnavailable(f"S3 endpoint {self.endpoint} unreachable: {reason}",
                                   endpoint=self.endpoint, reason=reason, hung=_hung(e)) from e

    def _ensure_bucket(self) -> None:
        """Create the bucket on first write if it is missing. No policy is set: it stays private."""
        with self._lock:
            if self._bucket_ready:
                return
            def create() -> None:
                if not self.client.bucket_exists(self.bucket):
                    try:
                        self.client.make_bucket(self.bucket)
                    except S3Error as e:
                        if e.code != "BucketAlreadyOwnedByYou":  # lost a race with ourselves
                            raise

            self._io(create, f"bucket s3://{self.bucket}")
            self._bucket_ready = True

    def _size(self, key: str) -> int | None:
        """The stored object's size, or None if there is none."""
        try:
            return self._io(lambda: self.client.stat_object(self.bucket, key),
                            self._uri(key)).size
        except _Missing:
            return None

    def _download(self, key: str, dest: Path, ref: ArtifactRef) -> None:
        """Stream the object to a temporary file beside `dest`, hashing; rename when it matches."""
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".download-")
        try:
            h = hashlib.sha256()
            with os.fdopen(fd, "wb") as f:
                resp = self.client.get_object(self.bucket, key)
                try:
                    for block in resp.stream(CHUNK):
                        f.write(block)
                        h.update(block)
                finally:
                    resp.close()
                    resp.release_conn()
            if h.hexdigest() != ref["sha256"]:
                raise StoreError(
                    f"artifact {self._uri(key)} failed its integrity check (sha256 "
                    f"{h.hexdigest()[:12]}…, expected {ref['sha256'][:12]}…): the object was "
                    "changed behind the store; rerun the stage that made it")
            os.replace(tmp, dest)
            self._verified.remember(dest, ref)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
