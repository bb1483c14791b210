"""Artifact-store throughput against the plain minio SDK, measured in the same run.

`python -m flows.bench_store --mb 64` uses the configured s3:// store (FOLEY_STORE_URL and the
AWS_* variables) and prints MB/s for our put / get (hashing, stat, cache, integrity check
included) next to a bare `fput_object` / `fget_object` of the same bytes, and their ratios.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from tasks.store_s3 import S3Store


def _random_file(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 1 << 20)
            f.write(os.urandom(n))
            left -= n


def bench_store(store: S3Store, client: Any, size: int) -> dict[str, float]:
    """MB/s of `store` put/get vs `client` (a minio.Minio) fput/fget of `size` random bytes.

    The bytes are fresh, so the store really uploads and its cache is cold; the objects and the
    downloaded copies are removed afterwards.
    """
    mb = size / 1e6
    with tempfile.TemporaryDirectory(prefix="foley-bench-") as tmp:
        src, back = Path(tmp) / "bench.bin", Path(tmp) / "plain.bin"
        _random_file(src, size)
        plain_key = f"{store.prefix}/bench/{uuid.uuid4().hex}.bin".lstrip("/")
        warm = Path(tmp) / "warm.txt"  # first write creates the bucket: keep it out of the timing
        warm.write_text(uuid.uuid4().hex)
        client.remove_object(store.bucket, store.key_of(store.put_file(warm)))

        t0 = time.perf_counter()
        ref = store.put_file(src, "application/octet-stream")
        t1 = time.perf_counter()
        cached = store.local_path(ref)
        t2 = time.perf_counter()
        client.fput_object(store.bucket, plain_key, str(src), part_size=store.config.part_size)
        t3 = time.perf_counter()
        client.fget_object(store.bucket, plain_key, str(back))
        t4 = time.perf_counter()

        client.remove_object(store.bucket, plain_key)
        client.remove_object(store.bucket, store.key_of(ref))
        cached.unlink(missing_ok=True)
    out = {"size_mb": mb,
           "store_put_mb_s": mb / (t1 - t0), "store_get_mb_s": mb / (t2 - t1),
           "sdk_put_mb_s": mb / (t3 - t2), "sdk_get_mb_s": mb / (t4 - t3)}
    out["put_ratio"] = out["store_put_mb_s"] / out["sdk_put_mb_s"]
    out["get_ratio"] = out["store_get_mb_s"] / out["sdk_get_mb_s"]
    return out


def main(argv: list[str] | None = None) -> None:
    """Print the benchmark for the configured S3 store as JSON."""
    from minio import Minio

    from flows.settings import get_settings
    from tasks.store import open_store
    from tasks.store_s3 import split_endpoint

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mb", type=int, default=64, help="object size in MB (default 64)")
    ap.add_argument("--repeat", type=int, default=5, help="runs; medians are printed")
    args = ap.parse_args(argv)
    settings = get_settings()
    s3 = settings.s3_config()
    if s3 is None:
        raise SystemExit("bench_store needs FOLEY_STORE_URL=s3://bucket/prefix")
    store = open_store(settings.resolved_store_url(), s3=s3)
    assert isinstance(store, S3Store)
    _, host, secure = split_endpoint(s3.endpoint)
    plain = Minio(host, access_key=s3.access_key, secure=secure, region=s3.region,
                  secret_key=s3.secret_key.get_secret_value() if s3.secret_key else None)
    runs = [bench_store(store, plain, args.mb * 1_000_000) for _ in range(args.repeat)]
    median = {k: sorted(r[k] for r in runs)[len(runs) // 2] for k in runs[0]}
    median["put_ratio"] = median["store_put_mb_s"] / median["sdk_put_mb_s"]  # of the medians
    median["get_ratio"] = median["store_get_mb_s"] / median["sdk_get_mb_s"]
    print(json.dumps({k: round(v, 2) for k, v in median.items()}, indent=2))


if __name__ == "__main__":
    main()
