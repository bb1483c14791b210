"""The bookkeeping every stage shares: cache lookup, activity rows, artifact storage.

A stage's work is a plain function `compute(inputs: dict[role, Path], workdir: Path) ->
StageOutput`. `run_stage` keys the run by the content of its inputs, its parameters and the
source of the code that does the work: if a completed activity with that key exists and its
artifacts are still in the store, its outputs are returned without recomputing (reruns are
idempotent and cheap). Otherwise it records a `running` activity, computes, stores the outputs
(artifact before the row that names it) and completes the activity in one transaction.
Either way the shot's pointer for the stage (`shot_stages`) names the run it now uses, which
`db.api.shot_outputs` reads: a run reused from another shot of the same content (a clip used
twice, a clip an earlier cut gave another shot) is this shot's too, and a shot whose clip
changed never finds its previous cut's outputs.

Every transaction goes through `transaction()`, which waits out a database restart with
bounded backoff (`db.engine.retry_db`) instead of failing the shot; the artifact store retries
on its own (`tasks.store.retry_io`). A run killed half-way leaves a `running` activity that the
next run of the same key takes over (`db.api.start_activity`), so a rerun adds no rows.
`OVERHEAD` adds up the time spent in database transactions and store I/O (`foley bench`).
"""
from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar
from urllib.parse import unquote, urlparse

from sqlalchemy.orm import Session

from db import api
from db.engine import retry_db
from tasks import runtime
from tasks.store import (ArtifactRef, LocalStore, Store, StoreError, guess_mime, pid_alive,
                         sha256_file)

log = logging.getLogger("foleyflow.stage")
PACKAGE_VERSION = "0.1.0"
T = TypeVar("T")


@dataclass
class StageOutput:
    """What a stage computed: files to store by role, and small JSON results."""

    files: dict[str, tuple[Path, str]] = field(default_factory=dict)  # role -> (path, mime)
    result: dict[str, Any] = field(default_factory=dict)


@dataclass
class StageResult:
    outputs: dict[str, ArtifactRef]
    result: dict[str, Any]
    activity_id: int
    cached: bool


_code_cache: dict[tuple[str, ...], str] = {}


def code_version(modules: Sequence[ModuleType]) -> str:
    """`0.1.0+<hash of the modules' source>`: changes whenever the code doing the work does."""
    names = tuple(m.__name__ for m in modules)
    if names not in _code_cache:
        h = hashlib.sha256()
        for m in modules:
            h.update(inspect.getsource(m).encode())
        _code_cache[names] = f"{PACKAGE_VERSION}+{h.hexdigest()[:12]}"
    return _code_cache[names]


def cache_key(task: str, inputs: dict[str, ArtifactRef], params: dict[str, Any], code: str) -> str:
    doc = {
        "task": task,
        "inputs": {k: v["sha256"] for k, v in sorted(inputs.items())},
        "params": params,
        "code": code,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def _prefect_ids() -> tuple[str | None, str | None]:
    try:
        from prefect.runtime import flow_run, task_run

        return (str(flow_run.id) if flow_run.id else None, str(task_run.id) if task_run.id else None)
    except Exception:  # outside a Prefect run (one-clip API, tests of task logic)
        return None, None


def run_stage(
    task: str,
    *,
    inputs: dict[str, ArtifactRef],
    params: dict[str, Any],
    code: Sequence[ModuleType],
    compute: Callable[[dict[str, Path], Path], StageOutput],
    reel_id: int | None = None,
    shot_id: int | None = None,
    agent: str | None = None,
    seed: int | None = None,
    checkpoint_sha256: str | None = None,
) -> StageResult:
    """Run one stage with provenance and caching (see module docstring)."""
    with OVERHEAD.timing("stage", shot_id):
        return _run_stage(task, inputs, params, code, compute, reel_id, shot_id, agent, seed,
                          checkpoint_sha256)


def _run_stage(task: str, inputs: dict[str, ArtifactRef], params: dict[str, Any],
               code: Sequence[ModuleType], compute: Callable[[dict[str, Path], Path], StageOutput],
               reel_id: int | None, shot_id: int | None, agent: str | None, seed: int | None,
               checkpoint_sha256: str | None) -> StageResult:
    sweep_once()
    store = runtime.store()
    version = code_version(code)
    key = cache_key(task, inputs, params, version)
    flow_run_id, task_run_id = _prefect_ids()

    def start(s: Session) -> tuple[api.Activity, dict[str, ArtifactRef] | None, bool]:
        """The completed run of this key with its outputs, else a new `running` one; and
        whether the shot uses that run already (`db.api.shot_outputs`)."""
        done = api.find_completed(s, task, key)
        if done is not None:
            used = shot_id is None or api.shot_stage(s, shot_id, task) == done.id
            return done, api.activity_outputs(s, done), used
        return _start(s), None, False

    def _start(s: Session) -> api.Activity:
        return api.start_activity(
            s,
            task=task,
            cache_key=key,
            parameters=params,
            code_version=version,
            checkpoint_sha256=checkpoint_sha256,
            seed=seed,
            reel_id=reel_id,
            shot_id=shot_id,
            agent_id=api.get_agent(s, agent).id if agent else None,
            prefect_flow_run_id=flow_run_id,
            prefect_task_run_id=task_run_id,
        )

    act, outputs, used = transaction(start, shot_id=shot_id)
    if outputs is not None:  # a completed run: reuse it if its artifacts are still stored
        with OVERHEAD.timing("store", shot_id):
            reusable = all(store.exists(ref) for ref in outputs.values())
        if reusable:
            if not used:  # another shot's run (same content), or this shot's earlier one
                done_id = act.id
                transaction(lambda s: api.set_shot_stage(s, shot_id, task, done_id),
                            shot_id=shot_id)
            OVERHEAD.count(cached=True)
            return StageResult(outputs, dict(act.result), act.id, cached=True)
        act = transaction(_start, shot_id=shot_id)
    OVERHEAD.count(cached=False)
    activity_id = act.id
    try:
        with OVERHEAD.timing("store", shot_id):
            local = {role: input_path(store, ref) for role, ref in inputs.items()}
        with work_dir(task) as tmp:
            out = compute(local, Path(tmp))
            with OVERHEAD.timing("store", shot_id):
                refs = {role: store.put_file(p, mime) for role, (p, mime) in out.files.items()}
    except BaseException as exc:
        _record_failure(activity_id, exc, shot_id)
        raise
    def finish(s: Session) -> None:
        api.finish_activity(s, activity_id, used=inputs, generated=refs, result=out.result)
        if shot_id is not None:
            api.set_shot_stage(s, shot_id, task, activity_id)

    transaction(finish, shot_id=shot_id)
    return StageResult(refs, out.result, activity_id, cached=False)


WORK_PREFIX = "foley-"
_WORK_NAME = re.compile(r"foley-.+-(\d+)-[a-z0-9_]+")  # stage names may hold "-"
STALE_WORK_S = 3600.0  # a dead process's work folder untouched this long is removed
_swept = False


def work_dir(task: str) -> tempfile.TemporaryDirectory[str]:
    """A stage's temporary work folder, `foley-<task>-<pid>-<random>` in the temp folder, removed
    when the stage ends. A process killed outright (kill -9, the OOM killer, power loss) cannot
    remove its own, and a conform's holds every reel-length mix — gigabytes on a feature reel —
    so the first stage a process runs removes what dead processes left (`sweep_once`)."""
    sweep_once()
    return tempfile.TemporaryDirectory(prefix=f"{WORK_PREFIX}{task}-{os.getpid()}-")


def sweep_once() -> None:
    """`sweep_work_dirs` once per process (`run_stage` calls it first: a rerun whose stages are
    all cached sweeps too)."""
    global _swept
    if not _swept:
        _swept = True
        try:
            sweep_work_dirs()
        except OSError as exc:  # never fail a stage over someone else's leftovers
            log.warning("could not sweep old work folders: %s", exc)


def sweep_work_dirs(root: Path | None = None, *, stale_s: float = STALE_WORK_S,
                    now: float | None = None) -> list[Path]:
    """Remove the stage work folders in `root` (the temp folder) that a dead process left: named
    by `work_dir`, owned by this user, their process no longer running, and nothing in them
    written at its top for `stale_s` seconds. A process of another machine or container
    sharing the temp folder looks dead from here: the hour without a write is what keeps its
    work (a stage writes its files at the top of its folder as it goes). Returns what was
    removed."""
    root = Path(tempfile.gettempdir()) if root is None else root
    now = time.time() if now is None else now
    removed: list[Path] = []
    for d in root.glob(f"{WORK_PREFIX}*"):
        m = _WORK_NAME.fullmatch(d.name)
        if m is None or int(m.group(1)) == os.getpid():
            continue
        try:
            st = d.lstat()
            if not d.is_dir() or d.is_symlink() or st.st_uid != os.getuid():
                continue
            if pid_alive(int(m.group(1))):
                continue
            newest = max([st.st_mtime] + [e.stat(follow_symlinks=False).st_mtime
                                          for e in os.scandir(d)])
        except OSError:  # gone meanwhile, or unreadable: not ours to judge
            continue
        if now - newest >= stale_s:
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    if removed:
        log.info("removed %d work folder(s) left by stopped processes", len(removed))
    return removed


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's text on one line (whitespace runs folded), at most `limit` characters;
    its type's name when it says nothing: the detail inside a one-line error."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _record_failure(activity_id: int, exc: BaseException, shot_id: int | None) -> None:
    """Mark the run failed (a rerun takes it over); never hide `exc` behind a second error."""
    message = "".join(traceback.format_exception_only(exc)).strip()
    try:
        transaction(lambda s: api.fail_activity(s, activity_id, message), shot_id=shot_id)
    except Exception as e:  # the database is away too: the run stays `running` until a rerun
        log.warning("could not record the failure of activity %s: %s", activity_id, e)


def transaction(fn: Callable[[Session], T], *, shot_id: int | None = None) -> T:
    """`fn(session)` in one transaction of the runtime database, run again if the database was
    unreachable (bounded backoff, `db.engine.retry_db`); the time counts as bookkeeping.

    `fn` may run more than once: it must only do database work (and idempotent reads)."""
    db = runtime.db()

    def once() -> T:
        with db.session() as s:
            return fn(s)

    with OVERHEAD.timing("db", shot_id):
        return retry_db(once, url=db.url)


class Overhead:
    """Cumulative seconds stages spent on bookkeeping rather than work: database transactions
    (`transaction`: run_stage's lookups and records, and the small reads tasks make through
    it) and artifact store I/O in run_stage and `register_file` (hashing, copies, uploads,
    downloads), in total and per shot.

    `stage_s` is the time spent inside run_stage altogether (work and bookkeeping). Thread-safe;
    several stages run at once, so the sums are thread-seconds."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.db_s = self.store_s = self.stage_s = 0.0
            self.computed = self.cached = 0
            self.per_shot: dict[int, dict[str, float]] = {}

    @contextlib.contextmanager
    def timing(self, kind: str, shot_id: int | None = None) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(kind, time.perf_counter() - t0, shot_id)

    def add(self, kind: str, seconds: float, shot_id: int | None = None) -> None:
        attr = {"db": "db_s", "store": "store_s", "stage": "stage_s"}[kind]
        with self._lock:
            setattr(self, attr, getattr(self, attr) + seconds)
            if shot_id is not None and kind != "stage":
                shot = self.per_shot.setdefault(shot_id, {"db_s": 0.0, "store_s": 0.0})
                shot[attr] += seconds

    def count(self, *, cached: bool) -> None:
        with self._lock:
            if cached:
                self.cached += 1
            else:
                self.computed += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"db_s": self.db_s, "store_s": self.store_s, "stage_s": self.stage_s,
                    "stages_computed": self.computed,
                    "stages_cached": self.cached,
                    "per_shot": {k: dict(v) for k, v in self.per_shot.items()}}


OVERHEAD = Overhead()


def input_path(store: Store, ref: ArtifactRef) -> Path:
    """A local path of an input: a stored artifact, or a file registered in place (a camera
    original referenced by `file://`, whichever store is configured)."""
    u = urlparse(ref["uri"])
    if u.scheme == "file" and not isinstance(store, LocalStore):
        p = Path(unquote(u.path))
        if not p.is_file() or p.stat().st_size != ref["bytes"]:
            raise StoreError(f"{p} changed or vanished since it was registered; rerun the pass")
        return p
    return store.local_path(ref)


def register_file(path: str | Path, mime: str | None = None, *, copy: bool = True) -> ArtifactRef:
    """Record an input file (a timeline, a media file) as an artifact.

    `copy=False` registers it in place (hash + its own file URI): camera originals stay where
    the studio keeps them and only their identity enters provenance."""
    if copy:
        with OVERHEAD.timing("store"):
            ref = runtime.store().put_file(path, mime)
    else:
        p = Path(path).resolve()
        ref = {"uri": p.as_uri(), "sha256": sha256_file(p), "bytes": p.stat().st_size,
               "mime": mime or guess_mime(p)}
    transaction(lambda s: api.put_artifact(s, ref))
    return ref
