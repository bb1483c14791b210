"""Envelope versions and review decisions: the bookkeeping of the approval queue.

An envelope is the human-editable JSON of DESIGN.md. Content equal to the latest version's is
never saved again; a changed envelope (a new prediction, a person's edit) becomes a new version
whose parent is the latest one, pending review. A prediction the pass made before is not
saved again (`save_version(prediction=True)`); a new one goes over a person's work, which
stays in the history and is reported by the next pass that completes (`unreported`). Decisions move a version's state; the
automatic policy is an agent (`policy:auto`) like any person, decides only on the pass's own
predictions on shots no person has worked on, and never overrides a person's decision.
Each version's row carries what the queue shows of it (`summary_of`), so a queue is read
from the database alone.
"""
from __future__ import annotations

import hashlib
import json
import math
import numbers
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from sqlalchemy import bindparam, func, select, tuple_, update
from sqlalchemy.orm import selectinload

from db import api, review
from models.spatial_render import validate_override
from tasks import runtime
from tasks.stage import code_version
from tasks.store import ArtifactRef

VERSION_ATTEMPTS = 5
# Events an envelope may hold per second of shot: 25 ms apart, denser than any Foley
# performance (a drum roll is 15–20 a second). The sampler keeps each event's sound while it
# levels and chokes the shot (about 1 MB each), so without a bound one edit could take the
# review app's memory.
MAX_EVENTS_PER_S = 40
CONTENT_KEYS = ("shot", "rate_hz", "duration_s", "curve", "events", "prompt")


def content_sha256(envelope: dict[str, Any]) -> str:
    """Hash of what the envelope says (not its version number or who made it)."""
    doc = {k: envelope.get(k) for k in CONTENT_KEYS}
    if envelope.get("category"):  # the library category a person chose (absent = automatic)
        doc["category"] = envelope["category"]
    if envelope.get("position"):  # where a person placed the sound (absent = follow the picture)
        doc["position"] = envelope["position"]
    if envelope.get("doubt") is not None:  # the model's: the policy reads it
        doc["doubt"] = envelope["doubt"]
    # allow_nan=False: a NaN or infinity anywhere (an envelope is strict JSON) is a ValueError
    # before anything is stored, from the pass or an edit alike
    return hashlib.sha256(json.dumps(doc, sort_keys=True, allow_nan=False).encode()).hexdigest()


def read_envelope(path: Path) -> dict[str, Any]:
    """An envelope JSON file as a dict."""
    return json.loads(Path(path).read_text())


def load_envelope(ref: ArtifactRef) -> dict[str, Any]:
    """A stored envelope artifact as a dict."""
    return read_envelope(runtime.store().local_path(ref))


def _kind_of(value: Any) -> str:
    """How a JSON value that is not what was asked for is named in a message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, str):
        return f"text {value[:20]!r}" + ("…" if len(value) > 20 else "")
    return repr(value)[:40]


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _finite_number(value: Any, what: str, where: str) -> float:
    """`value` as a float; ValueError naming `what` if it is not a finite number (JSON's
    true / false are not numbers; NaN / Infinity are not finite)."""
    if not _is_number(value):
        raise ValueError(f"{where}: {what} must be a number, got {_kind_of(value)}")
    try:
        number = float(value)
    except OverflowError:  # an integer of hundreds of digits
        raise ValueError(f"{where}: {what} is too large a number") from None
    if not math.isfinite(number):
        raise ValueError(f"{where}: {what} is {value}: every number must be finite")
    return number


def _check_shape(env: Any, where: str) -> None:
    """The envelope's fields are of the contract's types, each number finite (before any
    range check compares them)."""
    if not isinstance(env, dict):
        raise ValueError(f"{where}: an envelope must be a JSON object, got {_kind_of(env)}")
    for key in ("rate_hz", "duration_s", "curve", "events"):
        if key not in env:
            raise ValueError(f"{where}: envelope has no {key!r}")
    for key in ("rate_hz", "duration_s"):
        if _finite_number(env[key], key, where) <= 0:
            raise ValueError(f"{where}: {key} must be positive, got {env[key]}")
    curve = env["curve"]
    if not isinstance(curve, (list, tuple)):
        raise ValueError(f"{where}: curve must be a list of numbers, got {_kind_of(curve)}")
    for i, v in enumerate(curve):
        _finite_number(v, f"curve sample {i}", where)
    events = env["events"]
    if not isinstance(events, (list, tuple)):
        raise ValueError(f"{where}: events must be a list of event objects ([] for none), "
                         f"got {_kind_of(events)}")
    for i, ev in enumerate(events):
        if not isinstance(ev, dict):
            raise ValueError(f"{where}: event {i} must be an object with t, strength, x, y, "
                             f"kind, got {_kind_of(ev)}")
        for key in ("t", "strength", "x", "y", "kind"):
            if key not in ev:
                raise ValueError(f"{where}: event {i} has no {key!r}")
        for key in ("t", "strength", "x", "y"):
            _finite_number(ev[key], f"event {i} {key}", where)
        if not isinstance(ev["kind"], str):
            raise ValueError(f"{where}: event {i} kind must be text, got {_kind_of(ev['kind'])}")
        if ev.get("confidence") is not None:
            _finite_number(ev["confidence"], f"event {i} confidence", where)
    for key in ("prompt", "category"):
        if env.get(key) is not None and not isinstance(env[key], str):
            raise ValueError(f"{where}: {key} must be text or null")
    if env.get("doubt") is not None:
        _finite_number(env["doubt"], "doubt", where)


def validate_envelope(env: dict[str, Any], *, where: str) -> None:
    """Raise ValueError naming the field and what is wrong with it if `env` does not follow
    the envelope contract (docs/CONTRACTS.md), whatever its shape: the types first (an
    object; rate_hz and duration_s positive numbers; curve a list of numbers; events a list of
    objects with numeric t, strength, x, y, text kind, confidence a number or absent; every
    number finite), then the ranges."""
    _check_shape(env, where)
    samples = float(env["duration_s"]) * float(env["rate_hz"])  # (ints could overflow a float)
    n = round(samples) if math.isfinite(samples) else None
    if len(env["curve"]) != n:
        raise ValueError(f"{where}: curve has {len(env['curve'])} samples, expected "
                         f"{n if n is not None else samples}")
    for i, v in enumerate(env["curve"]):
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"{where}: curve values must lie in [0, 1] (sample {i} is {v})")
    most = max(MAX_EVENTS_PER_S, math.ceil(MAX_EVENTS_PER_S * env["duration_s"]))
    if len(env["events"]) > most:
        raise ValueError(f"{where}: {len(env['events'])} events in {env['duration_s']:g} s; at "
                         f"most {MAX_EVENTS_PER_S} a second ({most} in this shot)")
    for i, ev in enumerate(env["events"]):
        if not 0.0 <= ev["t"] <= env["duration_s"]:
            raise ValueError(f"{where}: event {i} at t={ev['t']} lies outside the shot")
        if not 0.0 <= ev["strength"] <= 1.0:
            raise ValueError(f"{where}: event {i} strength {ev['strength']} outside [0, 1]")
        for key in ("x", "y"):
            if not 0.0 <= ev[key] <= 1.0:
                raise ValueError(f"{where}: event {i} {key}={ev[key]} outside [0, 1]")
        if ev.get("confidence") is not None and not 0.0 <= ev["confidence"] <= 1.0:
            raise ValueError(f"{where}: event {i} confidence {ev['confidence']} outside [0, 1]")
    if env.get("doubt") is not None and not 0.0 <= env["doubt"] <= 1.0:
        raise ValueError(f"{where}: doubt {env['doubt']} outside [0, 1]")
    validate_override(env.get("position"), where=where)


def position_of(env: dict[str, Any], *, where: str) -> dict[str, float] | None:
    """The envelope's position override as numbers, None when it follows the picture."""
    return validate_override(env.get("position"), where=where) or None


POLICY = "policy:auto"


@dataclass(frozen=True)
class Superseded:
    """A person's work — an edit, or a person's decision on the version — that a new
    prediction of the pass was saved on top of (it stays in the shot's history)."""
    reel: str
    shot: str
    version: int
    by: str
    what: str          # "an edit" or the decision's state ("approved", "omitted", …)
    new_version: int

    def message(self) -> str:
        """What the pass says about it: the shot, the work it went over, and what to do."""
        return (f"{self.shot}: the new prediction v{self.new_version} went over v{self.version}, "
                f"{self.what} by {self.by} (it stays in the history). It waits for a "
                f"supervisor — the policy never decides on a shot a person has worked on: "
                f"`foley review show {self.reel} {self.shot}` lists both")


def held_by(s: Any, env: Any) -> tuple[str, str] | None:
    """(who, what) if the version is a person's work: an edit a person saved ("an edit"), or
    a version a person (not `policy:auto`) decided on (its state); None for the pass's own
    prediction, pending or decided by the policy."""
    if env.created_by is not None:
        return s.get(api.Agent, env.created_by).name, "an edit"
    who = env.decisions[-1].agent.name if env.decisions else None
    return (who, env.state.replace("_", " ")) if who not in (None, POLICY) else None


def save_version(
    shot_id: int,
    env: dict[str, Any],
    *,
    source: str,
    derived_from: ArtifactRef | None = None,
    created_by: str | None = None,
    base_version: int | None = None,
    prediction: bool = False,
    on_saved: Callable[[Any, int], None] | None = None,
) -> tuple[int, ArtifactRef, bool]:
    """Make `env` the shot's newest version unless its content already is the newest.

    `derived_from` is what the version was made from (the model's prediction, or the version a
    person edited); the link is recorded as an `envelope-version` activity.
    `base_version` (a person's edit): the version the edit started from; if another version
    was saved since, `db.review.StaleReview` is raised and nothing is written.
    `prediction` (the pass's estimate): nothing is added when it is what the pass predicted
    last (a rerun: the edits and decisions people made since stand). A prediction that
    differs from that — another estimator or checkpoint, a recut shot — becomes the next
    version, pending review, even if an older version had its content (switching estimators
    back and forth delivers the one asked for), and over a person's work (`held_by`) too: that
    work stays in the history, the pass reports it (`unreported`), and `auto_approve` leaves
    the shot to a supervisor from then on.
    `on_saved(session, version)` runs in the transaction that adds a new version (the review
    app writes the edit's audit event there: no crash keeps one without the other).
    Returns (version, artifact ref, created)."""
    db, store = runtime.db(), runtime.store()
    digest = content_sha256(env)
    for _ in range(VERSION_ATTEMPTS):
        try:
            return _save_once(db, store, shot_id, env, digest, source, derived_from, created_by,
                              base_version, prediction, on_saved)
        except api.VersionConflict:
            continue  # another writer took the number we stamped: read the latest again
    raise api.VersionConflict(f"shot id {shot_id}: could not save a new envelope version")


def _save_once(
    db: api.Database,
    store: Any,
    shot_id: int,
    env: dict[str, Any],
    digest: str,
    source: str,
    derived_from: ArtifactRef | None,
    created_by: str | None,
    base_version: int | None,
    prediction: bool,
    on_saved: Callable[[Any, int], None] | None,
) -> tuple[int, ArtifactRef, bool]:
    """One attempt, in one transaction: read the latest version, stamp the next number into the
    file, store it (artifact before the row naming it), insert exactly that version."""
    with db.session() as s:
        api.lock_shot(s, shot_id)
        latest = api.latest_envelope(s, shot_id)
        if latest is not None and latest.content_sha256 == digest:
            return latest.version, latest.artifact.ref(), False
        if prediction and latest is not None:
            before = api.latest_prediction(s, shot_id)
            if before is not None and before.content_sha256 == digest:
                return latest.version, latest.artifact.ref(), False   # a rerun
        if base_version is not None and (latest is None or latest.version != base_version):
            shot = s.get(api.Shot, shot_id)
            by = review.last_actor(s, latest) if latest else None
            raise review.StaleReview(
                f"{shot.reel.name} {shot.name}: v{latest.version if latest else '?'} was saved "
                f"(by {by or 'the pass'}) after v{base_version}, which your edit started from; "
                "nothing was written — load theirs, or save yours on top of it",
                latest_version=latest.version if latest else None, latest_by=by,
                state=latest.state if latest else None)
        version = latest.version + 1 if latest else 1
        parent = latest.version if latest else None
        stamped = {**env, "version": version, "parent": parent, "source": source}
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"envelope_v{version}.json"
            path.write_text(json.dumps(stamped, indent=1, allow_nan=False))
            ref = store.put_file(path, "application/json")
        api.add_envelope(s, shot_id, ref, content_sha256=digest, source=source,
                         parent_version=parent, created_by=created_by, version=version,
                         summary=summary_of(env))
        act = api.start_activity(
            s, task="envelope-version", cache_key=ref["sha256"], shot_id=shot_id,
            parameters={"version": version, "parent": parent, "source": source},
            code_version=code_version([]),
            agent_id=api.get_agent(s, created_by).id if created_by else None,
        )
        api.finish_activity(s, act.id, used={"from": derived_from} if derived_from else {},
                            generated={"envelope": ref})
        if on_saved is not None:
            on_saved(s, version)
    return version, ref, True


@dataclass
class Unreported:
    """The predictions of some shots no completed pass has reported yet (`unreported`)."""
    notes: dict[int, Superseded]  # shot id → the newest that went over a person's work
    ids: list[int]                # the envelope rows read: `mark_reported` once reported


def unreported(s: Any, shot_ids: Sequence[int]) -> Unreported:
    """The predictions saved on these shots that no completed pass has reported, and of them,
    per shot, the newest saved on top of a person's work (`held_by` its parent version).

    Read by the pass after its shots' predictions are saved — by itself or by its shot runs —,
    and marked by it (`mark_reported`) once its report is written: a prediction saved by a
    pass that aborted, or by a shot run that outlived its pass, is said by the next pass that
    completes; a rerun that saved nothing new says nothing. A few queries, whatever the count."""
    env = api.Envelope
    rows = list(s.scalars(
        select(env).where(env.shot_id.in_(list(shot_ids)), env.created_by.is_(None),
                          env.reported_at.is_(None), env.parent_version.is_not(None))
        .options(selectinload(env.shot).selectinload(api.Shot.reel))
        .order_by(env.shot_id, env.version)))
    keys = {(e.shot_id, e.parent_version) for e in rows}
    parents = {(p.shot_id, p.version): p for p in s.scalars(
        select(env).where(tuple_(env.shot_id, env.version).in_(keys))
        .options(selectinload(env.decisions).selectinload(api.Decision.agent)))} if keys else {}
    notes: dict[int, Superseded] = {}
    for e in rows:
        parent = parents.get((e.shot_id, e.parent_version))
        held = held_by(s, parent) if parent is not None else None
        if held is not None:
            notes[e.shot_id] = Superseded(e.shot.reel.name, e.shot.name, parent.version, *held,
                                          new_version=e.version)
    return Unreported(notes, [e.id for e in rows])


def mark_reported(s: Any, ids: Sequence[int]) -> None:
    """Stamp these predictions reported (`unreported`), each once."""
    if ids:
        s.execute(update(api.Envelope).where(api.Envelope.id.in_(list(ids)),
                                             api.Envelope.reported_at.is_(None))
                  .values(reported_at=func.now()))


def summary_of(env: dict[str, Any]) -> dict[str, Any]:
    """What the queue shows of an envelope: `events`, how many; `confidence`, the lowest of its
    events' (None without events or confidences); and `doubt`, the highest score among the
    candidates the model's contact scorer dropped (None when the envelope carries none)."""
    evs = env.get("events", [])
    confs = [float(e["confidence"]) for e in evs if e.get("confidence") is not None]
    doubt = env.get("doubt")
    return {"events": len(evs), "confidence": min(confs) if confs else None,
            "doubt": float(doubt) if doubt is not None else None}


def summaries(s: Any, rows: list[review.QueueRow]) -> list[review.QueueRow]:
    """`rows` (from `review.queue`), each with its version's summary. The summary is stored
    with the version when it is saved; a version saved before migration 0005 has none, so its
    file is read here and the summary written to its row (later queues read the row): after
    an upgrade, the first queue of an old reel reads the store, the rest do not. Every file is
    read before anything is written, so no database lock is held while the store answers."""
    old = [r for r in rows if r.events is None]
    if not old:
        return rows
    refs = {a.sha256: a.ref() for a in s.scalars(
        select(api.Artifact).where(api.Artifact.sha256.in_({r.envelope_sha256 for r in old})))}
    for r in old:
        got = summary_of(load_envelope(refs[r.envelope_sha256]))
        r.events, r.confidence, r.doubt = got["events"], got["confidence"], got["doubt"]
    rows_t = api.Envelope.__table__   # core executemany: one statement for every row
    s.execute(update(rows_t).where(rows_t.c.id == bindparam("row"), rows_t.c.events.is_(None))
              .values(events=bindparam("n"), confidence=bindparam("c"), doubt=bindparam("d")),
              [{"row": r.envelope_id, "n": r.events, "c": r.confidence, "d": r.doubt}
               for r in old])
    return rows


@task(name="auto-approve", cache_policy=NO_CACHE)
def auto_approve(shot_id: int, *, threshold: float = 0.0) -> str:
    """The `policy:auto` decision: approve the latest version if it is one of the pass's own
    predictions, pending, every event's confidence reaches `threshold` and its doubt (if it
    carries one) is at most 1 − `threshold`, on a shot no person has worked on (no version is
    `held_by` a person): once someone has edited or decided on a shot, a supervisor decides
    its new versions too. Human decisions are left alone. Returns the state."""
    with runtime.db().session() as s:
        env = api.latest_envelope(s, shot_id)
        if env is None:
            raise ValueError(f"shot id {shot_id} has no envelope to approve")
        if env.state != "pending_review" or env.created_by is not None:
            return env.state
        if any(held_by(s, e) for e in review.versions(s, shot_id)):
            return env.state   # a person has worked on the shot: a person decides
        doc = json.loads(runtime.store().local_path(env.artifact.ref()).read_text())
        sure = summary_of(doc)
        if (sure["confidence"] is not None and sure["confidence"] < threshold) or \
                (sure["doubt"] is not None and sure["doubt"] > round(1.0 - threshold, 9)):
            return env.state  # not sure enough: it waits for a supervisor
        api.decide(
            s,
            env.id,
            agent=POLICY,
            decision="approved",
            comment="approved automatically (foley run --approve auto)",
            params={"threshold": threshold, "events": len(doc["events"]),
                    "lowest_confidence": sure["confidence"], "doubt": sure["doubt"]},
        )
        return "approved"
