"""The review queue's read over N shots with an S3 store (SeaweedFS `weed mini` on loopback,
as the tests start it; `make test` installs it): each shot's events / lowest confidence / doubt
from the envelope rows (`tasks.decisions.summaries`, what `foley review list`, the queue page
and the Prefect queue artifact do) against reading every envelope file from the store, cold
S3 cache (as on a review host that did not run the pass), in the same run; best of 3.

    .venv/bin/python scripts/queue_bench.py 500
"""
from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def bench(n: int) -> dict[str, float]:
    from service_s3 import S3Server, find_weed, free_base_port

    tmp = Path(tempfile.mkdtemp(prefix="queue-bench-"))
    exe = find_weed()[0]
    if exe is None:
        raise SystemExit("the SeaweedFS `weed` binary is not installed: run `make test` once")
    server = S3Server(exe=exe, root=tmp / "s3", base_port=free_base_port())
    server.root.mkdir()
    server.start()
    try:
        os.environ.update(
            AWS_ENDPOINT_URL_S3=server.endpoint, AWS_ACCESS_KEY_ID=server.access_key,
            AWS_SECRET_ACCESS_KEY=server.secret_key, AWS_REGION=server.region,
            FOLEY_HOME=str(tmp / "home"), FOLEY_STORE_URL=f"s3://foley-{uuid.uuid4().hex[:8]}/q",
            FOLEY_S3_CACHE_DIR=str(tmp / "cache"))
        from db import api, review
        from flows.settings import get_settings
        from tasks import runtime
        from tasks.decisions import load_envelope, save_version, summaries, summary_of

        get_settings().configure_runtime()
        with runtime.db().session() as s:
            reel = api.upsert_reel(s, name="R", timeline_path="bench.otio", rate_num=24,
                                   rate_den=1, drop_frame=False, start_frame=86400,
                                   start_timecode="01:00:00:00")
            shots = api.upsert_shots(s, reel, [dict(
                name=f"SH{i:04d}", index=i, clip_name="c", record_in_frame=i * 72,
                duration_frames=72, record_in_s=i * 3.0, duration_s=3.0, source_in_s=0.0,
                source_rate=24.0) for i in range(n)])
            ids = [sh.id for sh in shots]
        for i, sid in enumerate(ids):   # a 3 s shot, 5 events, as the pass saves them
            save_version(sid, {
                "shot": f"SH{i:04d}", "rate_hz": 100, "duration_s": 3.0,
                "curve": [((k * 7 + i) % 50) / 100 for k in range(300)],
                "events": [{"t": 0.5 + j * 0.4, "strength": 0.5, "x": 0.5, "y": 0.5,
                            "kind": "impact", "confidence": 0.6 + j * 0.05} for j in range(5)],
                "prompt": None}, source="model:bench")
        files, rows = [], []
        for _ in range(3):
            shutil.rmtree(tmp / "cache", ignore_errors=True)   # cold, as on another host
            t0 = time.perf_counter()
            with runtime.db().session() as s:
                queue = review.queue(s, reel="R")
                read = [summary_of(load_envelope(api.find_artifact(s, r.envelope_sha256).ref()))
                        for r in queue]
            files.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            with runtime.db().session() as s:
                queue = summaries(s, review.queue(s, reel="R"))
            rows.append(time.perf_counter() - t0)
            assert [(r.events, r.confidence, r.doubt) for r in queue] == \
                [tuple(x.values()) for x in read], "the rows disagree with the files"
        return {"shots": n, "files_s": min(files), "rows_s": min(rows),
                "ratio": min(files) / min(rows)}
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    logging.disable(logging.WARNING)
    got = bench(int(sys.argv[1]) if len(sys.argv) > 1 else 500)
    print(f"{got['shots']} shots: every envelope file read (cold S3 cache) {got['files_s']:.3f} s, "
          f"the rows {got['rows_s']:.3f} s: {got['ratio']:.1f}x")
