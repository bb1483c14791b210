"""The provenance API: the only way the rest of foleyflow reads or writes the database.

Every write happens in a short transaction. Rules the callers must not be trusted with live
here: an envelope's state follows its decisions, and synthesis can only fetch an approved
version (`approved_envelope`).

Concurrent writers (several workers, several passes, the review app) are expected: rows keyed
by content or name (artifacts, agents, reels) are get-or-create under their unique constraints,
and new envelope versions of one shot are numbered one after another (see `add_envelope`).
A pass holds `reel_lock(db, reel)` so two passes over one reel take turns.
"""
from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from db import migrate
from db.engine import make_engine
from db.engine import redact_url as redact_url  # re-exported: callers need only db.api
from db.lineage import LineageNode as LineageNode
from db.lineage import lineage as lineage
from db.locks import LockTimeout as LockTimeout
from db.locks import reel_lock as reel_lock
from db.schema import (
    Activity,
    Agent,
    Artifact,
    Base,
    Decision,
    Derivation,
    Envelope,
    Generation,
    LibrarySound,
    Reel,
    Shot,
    ShotStage,
    Usage,
)

T = TypeVar("T", bound=Base)
REVIEW_STATES = ("pending_review", "approved", "retake_requested", "omitted")
DECISIONS = ("approved", "retake_requested", "omitted")


class NotApproved(PermissionError):
    """Raised when something asks for an approved envelope of a shot that has none."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@dataclass
class Database:
    """A connection to the provenance database (SQLite file or Postgres)."""

    url: str
    engine: Engine
    _sessions: sessionmaker[Session]

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: committed on success, rolled back on any error."""
        with self._sessions() as s, s.begin():
            yield s

    def dispose(self) -> None:
        self.engine.dispose()


def connect(url: str) -> Database:
    """Open the database at `url`, creating or upgrading its schema to this code's head.

    Plain `postgresql://` URLs get an installed driver. At head this costs one version query;
    concurrent callers are safe (see db.migrate)."""
    engine = make_engine(url)
    try:
        migrate.ensure_head(engine)
    except BaseException:
        engine.dispose()
        raise
    return Database(url=url, engine=engine, _sessions=sessionmaker(engine, expire_on_commit=False))


# ---------------------------------------------------------------- agents and artifacts


def _get_or_create(s: Session, model: type[T], key: dict[str, Any], **fields: Any) -> T:
    """The row of `model` matching `key`, inserted (with `fields`) if there is none.

    Safe against a concurrent writer inserting the same key: the insert runs in a savepoint
    and a unique-constraint violation falls back to reading the winner's row."""
    query = select(model).filter_by(**key)
    row = s.scalar(query)
    if row is not None:
        return row
    try:
        with s.begin_nested():
            row = model(**key, **fields)
            s.add(row)
            s.flush()
        return row
    except IntegrityError:
        row = s.scalar(query)
        assert row is not None, f"{model.__name__} {key} vanished after a unique violation"
        return row


def get_agent(s: Session, name: str, kind: str | None = None) -> Agent:
    """The agent called `name`, created on first use. Kind defaults from the name's prefix."""
    kind = kind or {"user": "person", "policy": "policy", "model": "model"}.get(
        name.split(":", 1)[0], "software"
    )
    return _get_or_create(s, Agent, {"name": name}, kind=kind)


def put_artifact(s: Session, ref: dict[str, Any]) -> Artifact:
    """The row for an artifact ref; inserting the same content twice returns the first row."""
    return _get_or_create(
        s, Artifact, {"sha256": ref["sha256"]}, uri=ref["uri"], bytes=ref["bytes"], mime=ref["mime"]
    )


def find_artifact(s: Session, sha256: str) -> Artifact | None:
    return s.scalar(select(Artifact).where(Artifact.sha256 == sha256))


# ---------------------------------------------------------------- reels and shots


def upsert_reel(s: Session, *, name: str, **fields: Any) -> Reel:
    """Create or update the reel called `name`."""
    reel = _get_or_create(s, Reel, {"name": name}, **fields)  # two ingests of one reel: one row
    for k, v in fields.items():
        setattr(reel, k, v)
    s.flush()
    return reel


def upsert_shots(s: Session, reel: Reel, shots: Sequence[dict[str, Any]]) -> list[Shot]:
    """Make the reel's shots match `shots` (by name); shots no longer in the edit are kept
    with `in_edit=False` so their decisions and envelopes are never lost."""
    # Concurrent ingests of one reel take turns on the reel's row (Postgres; SQLite has one
    # writer at a time anyway), so neither inserts a shot the other is inserting.
    s.execute(select(Reel.id).where(Reel.id == reel.id).with_for_update())
    existing = {sh.name: sh for sh in s.scalars(select(Shot).where(Shot.reel_id == reel.id))}
    out = []
    for fields in shots:
        sh = existing.pop(fields["name"], None)
        if sh is None:
            sh = Shot(reel_id=reel.id, **fields)
            s.add(sh)
        else:
            for k, v in fields.items():
                setattr(sh, k, v)
            sh.in_edit = True
        out.append(sh)
    for gone in existing.values():
        gone.in_edit = False
    s.flush()
    return out


def get_reel(s: Session, name: str) -> Reel | None:
    return s.scalar(select(Reel).where(Reel.name == name))


def get_shot(s: Session, reel: str, shot: str) -> Shot | None:
    return s.scalar(
        select(Shot).join(Reel).where(Reel.name == reel, Shot.name == shot)
    )


# ---------------------------------------------------------------- activities (task runs)


def find_completed(s: Session, task: str, cache_key: str) -> Activity | None:
    """The latest completed run of `task` with these inputs, if any."""
    return s.scalar(
        select(Activity)
        .where(Activity.task == task, Activity.cache_key == cache_key)
        .where(Activity.status == "completed")
        .order_by(Activity.id.desc())
        .limit(1)
    )


def start_activity(s: Session, *, task: str, cache_key: str, **fields: Any) -> Activity:
    """A `running` activity for this task and inputs.

    A run of the same key that never completed (the process was killed, or it failed) is
    taken over rather than duplicated, so a rerun after a crash leaves exactly the rows a
    clean run leaves; its earlier error stays visible in `result["previous_error"]`."""
    stale = s.scalar(
        select(Activity)
        .where(Activity.task == task, Activity.cache_key == cache_key)
        .where(Activity.status.in_(("running", "failed")))
        .order_by(Activity.id)
        .limit(1)
    )
    if stale is None:
        act = Activity(task=task, cache_key=cache_key, status="running", **fields)
        s.add(act)
    else:
        act = stale
        for k, v in fields.items():
            setattr(act, k, v)
        act.result = {"previous_error": act.error} if act.error else {}
        act.status, act.error, act.ended_at, act.started_at = "running", None, None, _now()
    s.flush()
    return act


def finish_activity(
    s: Session,
    activity_id: int,
    *,
    used: dict[str, dict[str, Any]],
    generated: dict[str, dict[str, Any]],
    result: dict[str, Any] | None = None,
) -> Activity:
    """Mark a run completed and link what it used and generated (artifacts already stored).

    Written as a handful of set-wise statements, not a round trip per link: a stage may use
    and generate dozens of artifacts, and on a networked Postgres each round trip costs more
    than the row. Links already present (a run taken over after a crash) are left as they are."""
    act = s.get(Activity, activity_id)
    assert act is not None, f"{activity_id=} does not exist"
    ids = put_artifacts(s, [*used.values(), *generated.values()])
    used_ids = {role: ids[ref["sha256"]] for role, ref in used.items()}
    gen_ids = {role: ids[ref["sha256"]] for role, ref in generated.items()}
    _insert_missing(
        s, Usage, [{"activity_id": act.id, "artifact_id": a, "role": r} for r, a in used_ids.items()]
    )
    _insert_missing(
        s,
        Generation,
        [{"activity_id": act.id, "artifact_id": a, "role": r} for r, a in gen_ids.items()],
    )
    sources = set(used_ids.values())
    _insert_missing(
        s,
        Derivation,
        [
            {"derived_id": d, "source_id": src, "activity_id": act.id}
            for d in set(gen_ids.values())
            for src in sorted(sources - {d})
        ],
    )
    act.status = "completed"
    act.result = result or {}
    act.ended_at = _now()
    return act


def _insert_missing(s: Session, model: type[Base], rows: list[dict[str, Any]]) -> None:
    """INSERT rows, skipping any whose key is already there (one statement, both dialects)."""
    if not rows:
        return
    dialect = postgresql if s.get_bind().dialect.name == "postgresql" else sqlite
    s.execute(dialect.insert(model).on_conflict_do_nothing(), rows)


def put_artifacts(s: Session, refs: Sequence[dict[str, Any]]) -> dict[str, int]:
    """Row ids of many artifact refs by sha256, inserting the missing ones in one statement.

    Concurrent writers inserting the same content are fine: ON CONFLICT DO NOTHING, then the
    ids are read back, whoever inserted them."""
    by_sha = {ref["sha256"]: ref for ref in refs}
    if not by_sha:
        return {}
    query = select(Artifact.sha256, Artifact.id).where(Artifact.sha256.in_(by_sha))
    have = dict(s.execute(query).tuples().all())
    missing = [
        {"sha256": sha, "uri": r["uri"], "bytes": r["bytes"], "mime": r["mime"]}
        for sha, r in by_sha.items()
        if sha not in have
    ]
    if missing:
        _insert_missing(s, Artifact, missing)
        have = dict(s.execute(query).tuples().all())
    return have


def fail_activity(s: Session, activity_id: int, error: str) -> None:
    act = s.get(Activity, activity_id)
    if act is not None:
        act.status = "failed"
        act.error = error[:4000]
        act.ended_at = _now()


def activity_outputs(s: Session, act: Activity) -> dict[str, dict[str, Any]]:
    """The artifacts a run generated, by role."""
    rows = s.execute(
        select(Generation.role, Artifact)
        .join(Artifact, Artifact.id == Generation.artifact_id)
        .where(Generation.activity_id == act.id)
    )
    return {role: art.ref() for role, art in rows}


def shot_outputs(s: Session, task: str, shot_id: int) -> dict[str, dict[str, Any]] | None:
    """What the shot uses now from `task`, by role (None if the stage never ran for it): the
    outputs of the run `tasks.stage.run_stage` last gave it (`ShotStage`) — its own, or one
    the cache gave it from another shot of the same content."""
    act = s.scalar(select(Activity).join(ShotStage, ShotStage.activity_id == Activity.id)
                   .where(ShotStage.shot_id == shot_id, ShotStage.task == task))
    return activity_outputs(s, act) if act is not None else None


def shot_stage(s: Session, shot_id: int, task: str) -> int | None:
    """The id of the run of `task` the shot uses now (`shot_outputs`)."""
    return s.scalar(select(ShotStage.activity_id)
                    .where(ShotStage.shot_id == shot_id, ShotStage.task == task))


def set_shot_stage(s: Session, shot_id: int, task: str, activity_id: int) -> None:
    """Make `activity_id` the run of `task` the shot uses (one statement, both dialects)."""
    dialect = postgresql if s.get_bind().dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(ShotStage).values(shot_id=shot_id, task=task, activity_id=activity_id)
    s.execute(stmt.on_conflict_do_update(index_elements=["shot_id", "task"],
                                         set_={"activity_id": activity_id}))


# ---------------------------------------------------------------- envelopes and decisions


class VersionConflict(RuntimeError):
    """Other writers kept taking the next envelope version of a shot; retrying may succeed."""


VERSION_ATTEMPTS = 5


def add_envelope(
    s: Session,
    shot_id: int,
    ref: dict[str, Any],
    *,
    content_sha256: str,
    source: str,
    parent_version: int | None = None,
    created_by: str | None = None,
    version: int | None = None,
    summary: dict[str, Any] | None = None,
) -> Envelope:
    """A new envelope version of the shot, pending review; versions count up from 1.

    `summary` is what the queue shows of the file (`events`, `confidence`, `doubt`, as
    `tasks.decisions.summary_of` reads them); without it the row's summary stays unread.

    With `version` given (the caller stamped it into the envelope file) exactly that number
    is inserted, and VersionConflict is raised if another writer took it first.

    Two writers adding a version of one shot at once both succeed, as N and N+1: on Postgres
    the shot's row is locked (FOR UPDATE) until the transaction ends, so the second writer
    waits and numbers after the first. Where that lock does not exist (SQLite, which has one
    writer at a time but may have read the latest version before waiting for the write lock)
    the (shot, version) unique constraint catches a taken number and the insert is retried
    with the next one, up to VERSION_ATTEMPTS times, then VersionConflict."""
    art = put_artifact(s, ref)
    agent_id = get_agent(s, created_by).id if created_by else None
    lock_shot(s, shot_id)
    for _ in range(VERSION_ATTEMPTS):
        last = s.scalar(select(func.max(Envelope.version)).where(Envelope.shot_id == shot_id))
        env = Envelope(
            shot_id=shot_id,
            version=(last or 0) + 1,
            parent_version=parent_version,
            artifact_id=art.id,
            content_sha256=content_sha256,
            source=source,
            state="pending_review",
            created_by=agent_id,
            **{k: (summary or {}).get(k) for k in ("events", "confidence", "doubt")},
        )
        if version is not None:
            env.version = version
        try:
            with s.begin_nested():
                s.add(env)
                s.flush()
            return env
        except IntegrityError:
            taken = s.scalar(
                select(Envelope.id).where(
                    Envelope.shot_id == shot_id, Envelope.version == env.version
                )
            )
            if taken is None:  # not a version clash (e.g. the shot does not exist)
                raise
            if version is not None:
                raise VersionConflict(
                    f"shot id {shot_id}: envelope version {version} was taken by another writer"
                ) from None
    raise VersionConflict(
        f"shot id {shot_id}: envelope version {env.version} was taken by another writer "
        f"{VERSION_ATTEMPTS} times in a row; retry the edit"
    )


def lock_shot(s: Session, shot_id: int) -> None:
    """Hold the shot's row until the transaction ends, then see the shot as it is now.

    Postgres: `SELECT … FOR UPDATE` on the row. SQLite has no row locks and opens its write
    transaction only at the first write, so a read made before that may be stale by the time
    the write runs: a no-op UPDATE of the row takes the database's write lock here (waiting
    for another writer to commit). Either way everything loaded before is expired, so what
    the caller reads next comes from after the other writer's commit."""
    s.flush()
    if s.get_bind().dialect.name == "sqlite":
        s.execute(update(Shot).where(Shot.id == shot_id).values(id=Shot.id))
    else:
        s.execute(select(Shot.id).where(Shot.id == shot_id).with_for_update())
    s.expire_all()


def latest_prediction(s: Session, shot_id: int) -> Envelope | None:
    """The shot's newest version made by the pass (no person created it), if any."""
    return s.scalar(select(Envelope).where(Envelope.shot_id == shot_id,
                                           Envelope.created_by.is_(None))
                    .order_by(Envelope.version.desc()).limit(1))


def latest_envelope(s: Session, shot_id: int) -> Envelope | None:
    return s.scalar(
        select(Envelope).where(Envelope.shot_id == shot_id).order_by(Envelope.version.desc())
    )


def decide(
    s: Session,
    envelope_id: int,
    *,
    agent: str,
    decision: str,
    comment: str | None = None,
    params: dict[str, Any] | None = None,
) -> Decision:
    """Record a review decision on one envelope version and move the version's state."""
    if decision not in DECISIONS:
        raise ValueError(f"decision must be one of {', '.join(DECISIONS)}, not {decision!r}")
    env = s.get(Envelope, envelope_id)
    assert env is not None, f"{envelope_id=} does not exist"
    d = Decision(
        envelope_id=env.id,
        agent_id=get_agent(s, agent).id,
        decision=decision,
        comment=comment,
        params=params or {},
    )
    s.add(d)
    env.state = decision
    s.flush()
    return d


def approved_envelope(s: Session, shot_id: int) -> Envelope:
    """The approved envelope version synthesis may use: the latest version, if approved.

    Raises NotApproved otherwise — synthesis never runs on an unapproved version."""
    env = latest_envelope(s, shot_id)
    if env is None or env.state != "approved":
        shot = s.get(Shot, shot_id)
        state = env.state if env else "no envelope"
        raise NotApproved(
            f"shot {shot.name if shot else shot_id}: latest envelope "
            f"{'v' + str(env.version) if env else ''} is {state}, not approved"
        )
    return env


# ---------------------------------------------------------------- library


def replace_library(s: Session, library: str, sounds: Sequence[dict[str, Any]]) -> int:
    """Make the indexed library `library` hold exactly `sounds` (artifact refs under 'ref')."""
    rows = s.scalars(select(LibrarySound).where(LibrarySound.library == library))
    old = {r.rel_path: r for r in rows}
    for fields in sounds:
        fields = dict(fields)
        art = put_artifact(s, fields.pop("ref"))
        row = old.pop(fields["rel_path"], None)
        if row is None:
            s.add(LibrarySound(library=library, artifact_id=art.id, **fields))
        else:
            for k, v in fields.items():
                setattr(row, k, v)
            row.artifact_id = art.id
    for gone in old.values():
        s.delete(gone)
    s.flush()
    return len(sounds)


def library_sounds(s: Session, library: str | None = None) -> list[LibrarySound]:
    q = select(LibrarySound).order_by(LibrarySound.library, LibrarySound.rel_path)
    if library:
        q = q.where(LibrarySound.library == library)
    return list(s.scalars(q))
