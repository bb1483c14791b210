"""The bookkeeping every stage shares: cache lookup, activity rows, artifact storage.

A stage's work is a plain function `compute(inputs: dict[role, Path], workdir: Path) ->
StageOutput`. `run_stage` keys the run by the content of its inputs, its parameters and the
source of the code that does the work: if a completed activity with that key exists and its
artifacts are still in the store, its outputs are returned without recomputing (reruns are
idempotent and cheap). Otherwise it records a `running` activity, computes, stores the outputs
(artifact before the row that names it) and completes the activity in one transaction.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import logging
import tempfile
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import unquote, urlparse

from db import api
from tasks import runtime
from tasks.store import ArtifactRef, LocalStore, Store, StoreError, guess_mime, sha256_file

log = logging.getLogger("foleyflow.stage")
PACKAGE_VERSION = "0.1.0"


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
    db, store = runtime.db(), runtime.store()
    version = code_version(code)
    key = cache_key(task, inputs, params, version)
    with db.session() as s:
        done = api.find_completed(s, task, key)
        if done is not None:
            outputs = api.activity_outputs(s, done)
            if all(store.exists(ref) for ref in outputs.values()):
                return StageResult(outputs, dict(done.result), done.id, cached=True)
        flow_run_id, task_run_id = _prefect_ids()
        act = api.start_activity(
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
        activity_id = act.id
    try:
        local = {role: input_path(store, ref) for role, ref in inputs.items()}
        with tempfile.TemporaryDirectory(prefix=f"foley-{task}-") as tmp:
            out = compute(local, Path(tmp))
            refs = {role: store.put_file(p, mime) for role, (p, mime) in out.files.items()}
    except BaseException as exc:
        with db.session() as s:
            api.fail_activity(s, activity_id, "".join(traceback.format_exception_only(exc)).strip())
        raise
    with db.session() as s:
        api.finish_activity(s, activity_id, used=inputs, generated=refs, result=out.result)
    return StageResult(refs, out.result, activity_id, cached=False)


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
        ref = runtime.store().put_file(path, mime)
    else:
        p = Path(path).resolve()
        ref = {"uri": p.as_uri(), "sha256": sha256_file(p), "bytes": p.stat().st_size,
               "mime": mime or guess_mime(p)}
    with runtime.db().session() as s:
        api.put_artifact(s, ref)
    return ref
