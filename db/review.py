"""The review queue's data: people, sessions, the audit trail, decisions with optimistic
locking, and the outbox of work decisions leave behind.

Rules that live here, not in the app or the CLI (both go through these functions):
- a decision is taken on the shot's *latest* version, and only if the state the person saw is
  still the state (`expect_state`), else `StaleReview` — two supervisors on one shot: the
  second gets a clear conflict and nothing of theirs is written;
- every decision is written together with its audit event and a `ReviewJob` (outbox) in one
  transaction, so the synthesis / re-conform it asks for cannot be lost by a crash;
- only a supervisor decides, only an editor or supervisor edits (`require_role`).
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import DateTime, delete, func, select, update
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.functions import FunctionElement

from db.api import DECISIONS, REVIEW_STATES, decide, get_agent, latest_envelope, lock_shot
from db.schema import (
    Agent,
    Artifact,
    AuditEvent,
    Decision,
    Envelope,
    LoginAttempt,
    Reel,
    ReviewJob,
    Shot,
    User,
    UserSession,
)

ROLES = ("viewer", "editor", "supervisor")
RANK = {role: i for i, role in enumerate(ROLES)}
SETTLED = ("approved", "omitted")  # a reel re-conforms once every shot is in one of these


class ReviewError(RuntimeError):
    """A review action that cannot be taken as asked (the message says why)."""


class StaleReview(ReviewError):
    """Someone else changed the shot since the caller looked: nothing was written."""

    def __init__(self, message: str, *, latest_version: int | None, latest_by: str | None,
                 state: str | None) -> None:
        super().__init__(message)
        self.latest_version, self.latest_by, self.state = latest_version, latest_by, state


class Forbidden(ReviewError):
    """The person's role does not allow the action."""


class UnknownUser(ReviewError):
    """No active user of that name."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _aware(t: dt.datetime) -> dt.datetime:
    return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)  # SQLite drops the zone


class db_now(FunctionElement):  # noqa: N801 - reads as the SQL function it is
    """The database's clock, in SQL: Postgres's `now()` (the transaction's start, one value
    for every row a transaction writes), SQLite's current UTC time to the millisecond (SQLite
    keeps no zone: read back through `_aware`, as `created_at` is). The outbox's times are the
    database's, not the client's: hosts sharing a Postgres may disagree on the time, and a
    job's retry backoff is measured from `finished_at` against `db_clock`."""

    type = DateTime(timezone=True)
    inherit_cache = True


@compiles(db_now)
def _db_now_default(element: db_now, compiler: object, **kw: object) -> str:
    return "CURRENT_TIMESTAMP"


@compiles(db_now, "sqlite")
def _db_now_sqlite(element: db_now, compiler: object, **kw: object) -> str:
    return "strftime('%Y-%m-%d %H:%M:%f', 'now')"


def db_clock(s: Session) -> dt.datetime:
    """The database's time now (aware, UTC): what `finished_at` and `claimed_at` are written
    with, so retries are due by one clock whichever host asks."""
    return _aware(s.scalar(select(db_now())))


# ---------------------------------------------------------------- people


def check_new_user(s: Session, name: str, role: str) -> None:
    """ReviewError unless a user `name` with `role` may be created (checked before a
    password is asked for, and again by `create_user`)."""
    if role not in ROLES:
        raise ReviewError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    if not name or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise ReviewError(f"user name {name!r}: use letters, digits, '.', '-' or '_'")
    if s.scalar(select(User).where(User.name == name)) is not None:
        raise ReviewError(f"user {name!r} exists already")


def create_user(s: Session, name: str, role: str, password_hash: str) -> User:
    check_new_user(s, name, role)
    user = User(name=name, role=role, password_hash=password_hash,
                agent_id=get_agent(s, f"user:{name}", "person").id)
    s.add(user)
    s.flush()
    return user


def get_user(s: Session, name: str) -> User | None:
    return s.scalar(select(User).where(User.name == name, User.active.is_(True)))


def require_user(s: Session, name: str, role: str) -> User:
    """The active user `name`, who must hold at least `role` (UnknownUser / Forbidden)."""
    user = get_user(s, name)
    if user is None:
        raise UnknownUser(f"no user {name!r}: add one with `foley review user add {name} "
                          f"--role {role}`")
    require_role(user, role)
    return user


def require_role(user: User, role: str) -> None:
    if RANK[user.role] < RANK[role]:
        article = "an" if user.role[:1] in "aeiou" else "a"  # "an editor", "a viewer"
        raise Forbidden(f"{user.name} is {article} {user.role}; this needs a {role}")


def list_users(s: Session) -> list[User]:
    return list(s.scalars(select(User).order_by(User.name)))


def set_password(s: Session, name: str, password_hash: str) -> None:
    user = get_user(s, name)
    if user is None:
        raise UnknownUser(f"no user {name!r}")
    user.password_hash = password_hash
    s.execute(delete(UserSession).where(UserSession.user_id == user.id))  # sign out everywhere


def set_role(s: Session, name: str, role: str) -> None:
    if role not in ROLES:
        raise ReviewError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    user = get_user(s, name)
    if user is None:
        raise UnknownUser(f"no user {name!r}")
    user.role = role


# ---------------------------------------------------------------- sessions and sign-in limits


def create_session(s: Session, user: User, *, token_sha256: str, csrf_token: str,
                   lifetime: dt.timedelta, client: str | None) -> UserSession:
    row = UserSession(user_id=user.id, token_sha256=token_sha256, csrf_token=csrf_token,
                      expires_at=_now() + lifetime, client=client)
    s.add(row)
    s.flush()
    return row


def session_by_token(s: Session, token_sha256: str) -> UserSession | None:
    """The live session with this token hash (None if unknown, expired or the user disabled)."""
    row = s.scalar(select(UserSession).where(UserSession.token_sha256 == token_sha256))
    if row is None or _aware(row.expires_at) <= _now() or not row.user.active:
        return None
    return row


def end_session(s: Session, token_sha256: str) -> None:
    s.execute(delete(UserSession).where(UserSession.token_sha256 == token_sha256))


def record_failed_login(s: Session, username: str, client: str) -> None:
    s.add(LoginAttempt(username=username[:100], client=client[:200]))


def failed_logins(s: Session, *, username: str, client: str, window: dt.timedelta
                  ) -> tuple[int, int, dt.datetime | None]:
    """Failed sign-ins within `window`: (for this user name, from this client, oldest of them)."""
    since = _now() - window
    by_user = s.scalar(select(func.count()).where(LoginAttempt.username == username,
                                                  LoginAttempt.at >= since)) or 0
    by_client = s.scalar(select(func.count()).where(LoginAttempt.client == client,
                                                    LoginAttempt.at >= since)) or 0
    oldest = s.scalar(select(func.min(LoginAttempt.at)).where(
        (LoginAttempt.username == username) | (LoginAttempt.client == client),
        LoginAttempt.at >= since))
    return by_user, by_client, _aware(oldest) if oldest else None


def clear_failed_logins(s: Session, username: str) -> None:
    s.execute(delete(LoginAttempt).where(LoginAttempt.username == username))


# ---------------------------------------------------------------- audit


def audit(s: Session, actor: str, action: str, *, reel: str | None = None,
          shot: str | None = None, version: int | None = None, client: str | None = None,
          **details: Any) -> None:
    s.add(AuditEvent(actor=actor, action=action, reel=reel, shot=shot, version=version,
                     client=client, details=details))


def audit_trail(s: Session, *, reel: str | None = None, shot: str | None = None,
                limit: int = 200) -> list[AuditEvent]:
    q = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
    if reel is not None:
        q = q.where(AuditEvent.reel == reel)
    if shot is not None:
        q = q.where(AuditEvent.shot == shot)
    return list(s.scalars(q))


def version_creator(s: Session, env: Envelope) -> str:
    """Who made a version, as the review app's shot JSON and `foley review show` say it: the
    agent that saved it (a person's edit: "user:ed"), else the estimator of the pass that
    predicted it ("model:" + its source, e.g. "model:baseline:motion@2")."""
    agent = s.get(Agent, env.created_by) if env.created_by else None
    return agent.name if agent else f"model:{env.source}"


def edit_notes(s: Session, reel: str, shot: str) -> dict[int, str | None]:
    """Version → the note its editor saved it with (the comment of `POST …/versions`), kept
    only in the edit's audit event (written in the version's own transaction): the newest edit
    event of each version, however many events the shot has."""
    notes: dict[int, str | None] = {}
    for a in s.scalars(select(AuditEvent).where(
            AuditEvent.action == "edit", AuditEvent.reel == reel, AuditEvent.shot == shot,
            AuditEvent.version.is_not(None)).order_by(AuditEvent.id.desc())):
        notes.setdefault(a.version, (a.details or {}).get("comment"))
    return notes


# ---------------------------------------------------------------- the queue


@dataclass
class QueueRow:
    reel: str
    shot: str
    shot_id: int
    index: int
    record_in_frame: int  # from midnight, timeline start included
    rate: tuple[int, int]
    drop_frame: bool
    duration_s: float
    state: str
    version: int
    since: dt.datetime  # when the shot entered its state (latest version or last decision)
    envelope_sha256: str
    envelope_id: int = 0
    # The latest version's summary as stored with it (Envelope.events / confidence / doubt);
    # `events` is None for a version saved before migration 0005 (`decisions.summaries`).
    events: int | None = None
    confidence: float | None = None
    doubt: float | None = None


def queue(s: Session, *, reel: str | None = None, status: str | None = None) -> list[QueueRow]:
    """Every in-edit shot with an envelope, with its latest version's state (`status` filters)."""
    latest = (select(Envelope.shot_id, func.max(Envelope.version).label("v"))
              .group_by(Envelope.shot_id).subquery())
    last_decision = (select(Decision.envelope_id, func.max(Decision.created_at).label("at"))
                     .group_by(Decision.envelope_id).subquery())
    q = (select(Reel, Shot, Envelope, Artifact.sha256, last_decision.c.at)
         .join(Shot, Shot.reel_id == Reel.id)
         .join(latest, latest.c.shot_id == Shot.id)
         .join(Envelope, (Envelope.shot_id == Shot.id) & (Envelope.version == latest.c.v))
         .join(Artifact, Artifact.id == Envelope.artifact_id)
         .outerjoin(last_decision, last_decision.c.envelope_id == Envelope.id)
         .where(Shot.in_edit.is_(True))
         .order_by(Reel.name, Shot.index))
    if reel is not None:
        q = q.where(Reel.name == reel)
    if status is not None:
        q = q.where(Envelope.state == status)
    rows = []
    for r, sh, env, sha, decided_at in s.execute(q):   # one query, whatever the shots
        rows.append(QueueRow(
            reel=r.name, shot=sh.name, shot_id=sh.id, index=sh.index,
            record_in_frame=r.start_frame + sh.record_in_frame, rate=(r.rate_num, r.rate_den),
            drop_frame=r.drop_frame, duration_s=sh.duration_s, state=env.state,
            version=env.version, since=_aware(decided_at or env.created_at),
            envelope_sha256=sha, envelope_id=env.id, events=env.events,
            confidence=env.confidence, doubt=env.doubt,
        ))
    return rows


def counts(s: Session, *, reel: str | None = None) -> dict[str, int]:
    out = {state: 0 for state in REVIEW_STATES}
    for row in queue(s, reel=reel):
        out[row.state] += 1
    return out


def reel_names(s: Session) -> list[str]:
    return list(s.scalars(select(Reel.name).order_by(Reel.name)))


def versions(s: Session, shot_id: int) -> list[Envelope]:
    return list(s.scalars(select(Envelope).where(Envelope.shot_id == shot_id)
                          .order_by(Envelope.version)))


def reel_settled(s: Session, reel_id: int) -> bool:
    """Every in-edit shot that has an envelope is approved or omitted (shots that failed or
    were skipped before an envelope existed do not hold the reel back; they are reported)."""
    for sh in s.scalars(select(Shot).where(Shot.reel_id == reel_id, Shot.in_edit.is_(True))):
        env = latest_envelope(s, sh.id)
        if env is not None and env.state not in SETTLED:
            return False
    return True


# ---------------------------------------------------------------- decisions


def check_latest(s: Session, shot: Shot, version: int, expect_state: str | None) -> Envelope:
    """The shot's latest version, if it is `version` (and in `expect_state`), else StaleReview."""
    env = latest_envelope(s, shot.id)
    if env is None:
        raise ReviewError(f"{shot.reel.name} {shot.name} has no envelope to review yet")
    by = last_actor(s, env)
    if env.version != version:
        raise StaleReview(
            f"{shot.reel.name} {shot.name}: v{env.version} (by {by or 'the pass'}) replaced "
            f"v{version} while you were looking; nothing was written — review v{env.version}",
            latest_version=env.version, latest_by=by, state=env.state)
    if expect_state is not None and env.state != expect_state:
        raise StaleReview(
            f"{shot.reel.name} {shot.name} v{version} is {env.state} now (by {by}), not "
            f"{expect_state}; nothing was written — reload to see the decision",
            latest_version=env.version, latest_by=by, state=env.state)
    return env


def last_actor(s: Session, env: Envelope) -> str | None:
    """Who last touched the version: its latest decision's agent, else who created it."""
    if env.decisions:
        return env.decisions[-1].agent.name
    agent = s.get(Agent, env.created_by) if env.created_by else None
    return agent.name if agent else None


COMMENT_MAX = 4000  # characters of a decision's or an edit's comment


def clean_comment(comment: Any) -> str | None:
    """A comment as stored: text stripped of surrounding space, None if empty. ReviewError
    (naming 'comment') for anything but text or None, or text over COMMENT_MAX characters."""
    if comment is None:
        return None
    if not isinstance(comment, str):
        raise ReviewError(f"'comment' must be text or null, not {type(comment).__name__} "
                          f"{comment!r:.40}")
    comment = comment.strip()
    if len(comment) > COMMENT_MAX:
        raise ReviewError(f"'comment' has {len(comment)} characters; at most {COMMENT_MAX}")
    return comment or None


def take_decision(s: Session, shot: Shot, *, version: int, decision: str, user: User,
                  comment: str | None = None, expect_state: str | None = None,
                  client: str | None = None, via: str = "app") -> tuple[Decision, ReviewJob]:
    """A supervisor's decision on the shot's latest version, with its audit event and the job
    it leaves behind (synthesis and re-conform of the reel), all in the caller's transaction."""
    if decision not in DECISIONS:
        raise ReviewError(f"decision must be one of {', '.join(DECISIONS)}, not {decision!r}")
    require_role(user, "supervisor")
    comment = clean_comment(comment)
    if decision == "retake_requested" and not comment:
        raise ReviewError("a retake request needs a comment saying what to change")
    lock_shot(s, shot.id)  # two supervisors on one shot take turns here (Postgres)
    env = check_latest(s, shot, version, expect_state)
    d = decide(s, env.id, agent=f"user:{user.name}", decision=decision, comment=comment,
               params={"via": via})
    audit(s, f"user:{user.name}", f"decision:{decision}", reel=shot.reel.name, shot=shot.name,
          version=version, client=client, comment=comment, decision_id=d.id, via=via)
    job = ReviewJob(reel_id=shot.reel_id, decision_id=d.id,
                    reason=f"{shot.name} v{version} {decision} by {user.name}")
    s.add(job)
    s.flush()
    return d, job


# ---------------------------------------------------------------- the outbox
#
# A job is `queued` until an apply run claims it (`running`), then `done` — or, when the run
# failed on it, `queued` again to be retried (an ordinary failure: a disk full, the store away
# for a while …) or `failed`: the failure was bad input the next attempt would meet again (a
# delivery folder refused, an envelope that cannot be synthesized), or the attempts ran out.
# A job's outcome is its shot's: when one approved shot cannot be synthesized, the jobs of the
# decisions on that shot fail with its reason and the others of the run are done (the rest of
# the reel is delivered); a failure of the reel's own work (the re-conform, the folder) fails
# them all. A failed job stays until someone runs `foley review apply REEL` (after fixing
# what it says) or a new decision on the reel sets off a run that delivers: one run serves
# every unfinished job of its reel, since it delivers the reel as it is now.
#
# `error` keeps the last failure and `attempts` counts the runs that failed on the job (a
# delivery folder refused before any work is no attempt). The app's worker retries a queued job
# that failed once its backoff has passed (RETRY_BACKOFF_S, doubled after each attempt, at
# most RETRY_BACKOFF_MAX_S) by the database's clock (`db_now`: `finished_at`, `claimed_at`);
# `foley review apply` does not wait for it.

RETRY_ATTEMPTS = 6            # the 6th failed attempt leaves the job failed
RETRY_BACKOFF_S = 60.0        # 1, 2, 4, 8, 16 min between attempts: ~30 min in all
RETRY_BACKOFF_MAX_S = 3600.0
UNFINISHED = ("queued", "running", "failed")


def job_attempts(job: ReviewJob) -> int:
    """How many runs failed on the job so far (0: none did)."""
    return job.attempts or 0


def retry_at(job: ReviewJob) -> dt.datetime | None:
    """When the app's worker may run a queued job that failed before (None: not such a job)."""
    n = job_attempts(job)
    if job.status != "queued" or n == 0 or job.finished_at is None:
        return None
    delay = min(RETRY_BACKOFF_S * 2 ** (n - 1), RETRY_BACKOFF_MAX_S)
    return _aware(job.finished_at) + dt.timedelta(seconds=delay)


def pending_jobs(s: Session, reel_id: int | None = None, *, running: bool = True
                 ) -> list[ReviewJob]:
    """Jobs waiting to be run, oldest first: queued ones (fresh, or failed once and waiting for
    their retry) and (with `running`) ones a process claimed. A running job is abandoned if the
    reel's lock is free (an apply run holds it from claim to finish), which is what
    `claim_jobs`, called under that lock, relies on. Failed jobs are not pending: see
    `failed_jobs`."""
    states = ("queued", "running") if running else ("queued",)
    return _jobs(s, states, reel_id)


def failed_jobs(s: Session, reel_id: int | None = None) -> list[ReviewJob]:
    """Jobs no run will take up by itself (bad input, or out of attempts), oldest first."""
    return _jobs(s, ("failed",), reel_id)


def _jobs(s: Session, states: Sequence[str], reel_id: int | None) -> list[ReviewJob]:
    q = select(ReviewJob).where(ReviewJob.status.in_(states)).order_by(ReviewJob.id)
    if reel_id is not None:
        q = q.where(ReviewJob.reel_id == reel_id)
    return list(s.scalars(q))


def claim_jobs(s: Session, reel_id: int, *, flow_run_id: str | None = None) -> list[int]:
    """Mark every unfinished job of the reel running — queued, left running by a process that
    died, failed: one apply run serves them all, as it delivers the reel as it is now. Call it
    holding the reel's lock: then a job another process left running was abandoned by a
    process that died (its lock died with it) and is taken over here."""
    ids = [j.id for j in _jobs(s, UNFINISHED, reel_id)]
    if ids:
        s.execute(update(ReviewJob).where(ReviewJob.id.in_(ids)).values(
            status="running", claimed_at=db_now(), prefect_flow_run_id=flow_run_id))
    return ids


def finish_jobs(s: Session, ids: Sequence[int], *, error: str | None = None,
                retry: bool = True, attempt: bool = True) -> None:
    """The run that claimed `ids` is over for them: done, or failed with `error`. A failed job
    goes back to the queue for a retry unless `retry` is False (bad input) or that was its last
    attempt (RETRY_ATTEMPTS); either way its error and attempt count are kept. `attempt` False:
    nothing was tried — refused before any work (`refuse_jobs`) — the error is recorded and the
    job failed (with `retry` False) without counting an attempt. `finished_at` is the
    database's time (`db_now`)."""
    if not ids:
        return
    for job in s.scalars(select(ReviewJob).where(ReviewJob.id.in_(ids))):
        job.finished_at = db_now()  # written at the flush, read back from the row
        if error is None:
            job.status = "done"  # an earlier attempt's error stays, for the record
            continue
        job.attempts = n = job_attempts(job) + (1 if attempt else 0)
        job.error = error[:4000]
        job.status = "queued" if retry and n < RETRY_ATTEMPTS else "failed"
    s.flush()


def refuse_jobs(s: Session, ids: Sequence[int], error: str) -> None:
    """Fail `ids` for a refusal met before any work (a delivery folder `check_delivery_folder`
    refuses): the error is recorded and the jobs failed — not retried by the worker, no attempt
    counted, since no run tried them."""
    finish_jobs(s, ids, error=error, retry=False, attempt=False)


def job_shots(s: Session, ids: Sequence[int]) -> dict[int, str | None]:
    """Each job → the name of the shot its decision was taken on (None: its decision is gone)."""
    q = (select(ReviewJob.id, Shot.name).select_from(ReviewJob)
         .outerjoin(Decision, Decision.id == ReviewJob.decision_id)
         .outerjoin(Envelope, Envelope.id == Decision.envelope_id)
         .outerjoin(Shot, Shot.id == Envelope.shot_id)
         .where(ReviewJob.id.in_(list(ids))))
    return {job_id: name for job_id, name in s.execute(q)}


def reels_to_apply(s: Session, *, retry_failed: bool = False,
                   now: dt.datetime | None = None) -> dict[str, bool]:
    """Reels with jobs an apply run should serve now → whether any of them waits unclaimed
    (False: all are claimed, by a run going on or one that died). A job that failed is left
    out until its backoff has passed, and a failed one altogether — unless `retry_failed`
    (`foley review apply`: a person asks for it, now). `now` defaults to the database's clock,
    the one `finished_at` was written by."""
    now = now or db_clock(s)
    out: dict[str, bool] = {}
    for job in _jobs(s, UNFINISHED, None):
        if not retry_failed:
            if job.status == "failed":
                continue
            at = retry_at(job)
            if at is not None and at > now:
                continue
        name = s.get(Reel, job.reel_id).name
        out[name] = out.get(name, False) or job.status in ("queued", "failed")
    return out


def retries(s: Session) -> dict[str, dt.datetime]:
    """Reels with queued jobs that failed before → the soonest one of them may be retried."""
    out: dict[str, dt.datetime] = {}
    for job in _jobs(s, ("queued",), None):
        at = retry_at(job)
        if at is not None:
            name = s.get(Reel, job.reel_id).name
            out[name] = min(at, out.get(name, at))
    return out


@dataclass
class Behind:
    """A reel whose delivery does not reflect all its decisions yet, and why."""
    reel: str
    decisions: int                # unfinished jobs (decisions not applied)
    status: str                   # queued | running | retrying | failed
    attempts: int = 0             # failed runs of the job that has had most
    error: str | None = None      # its last failure
    retry_at: dt.datetime | None = None  # when the app's worker tries again (retrying)

    def message(self) -> str:
        n = f"{self.decisions} decision{'s' * (self.decisions != 1)}"
        apply = f"`foley review apply {self.reel}`"
        if self.status == "queued":
            return (f"{self.reel}: {n} not applied yet: the review app's worker applies "
                    f"{'them' if self.decisions != 1 else 'it'}, or {apply}")
        if self.status == "running":
            return f"{self.reel}: {n} being applied"
        if self.status == "retrying":
            when = (self.retry_at.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
                    if self.retry_at else "soon")
            return (f"{self.reel}: delivery behind {n}: applying failed (attempt "
                    f"{self.attempts} of {RETRY_ATTEMPTS}): {self.error}; the review app's "
                    f"worker retries at {when}, or run {apply}")
        spent = (f" after {self.attempts} attempts" if self.attempts >= RETRY_ATTEMPTS
                 else "")
        return (f"{self.reel}: delivery behind {n}: applying failed{spent} and is not "
                f"retried: {self.error} — once that is fixed, run {apply}")

    def to_dict(self) -> dict[str, Any]:
        return {"reel": self.reel, "decisions": self.decisions, "status": self.status,
                "attempts": self.attempts, "error": self.error,
                "retry_at": self.retry_at.isoformat() if self.retry_at else None,
                "message": self.message()}


def deliveries_behind(s: Session, *, reel: str | None = None) -> list[Behind]:
    """Reels with decisions their delivery does not reflect yet (unfinished jobs), by name: a
    run failed on them (`failed`: some job is failed; `retrying`: they wait for a retry), or
    they wait for a run (`queued`) or are in one (`running`). `error` is the latest failure,
    `attempts` the most any of the jobs took."""
    by_reel: dict[int, list[ReviewJob]] = {}
    for job in _jobs(s, UNFINISHED, None):
        by_reel.setdefault(job.reel_id, []).append(job)

    def finished(j: ReviewJob) -> tuple[dt.datetime, int]:
        return (_aware(j.finished_at) if j.finished_at else _now(), j.id)

    out = []
    for reel_id, jobs in by_reel.items():
        name = s.get(Reel, reel_id).name
        if reel is not None and name != reel:
            continue
        failed = [j for j in jobs if j.status == "failed"]
        retrying = [j for j in jobs if j.status == "queued" and job_attempts(j)]
        if any(j.status == "running" for j in jobs):
            status, tried = "running", []
        elif failed:
            status, tried = "failed", failed
        elif retrying:
            status, tried = "retrying", retrying
        else:
            status, tried = "queued", []
        last = max(tried, key=finished, default=None)
        out.append(Behind(
            reel=name, decisions=len(jobs), status=status,
            attempts=max(map(job_attempts, tried), default=0),
            error=last.error if last is not None else None,
            retry_at=min(filter(None, map(retry_at, retrying)), default=None)))
    return sorted(out, key=lambda b: b.reel)


def job_status(s: Session, job_id: int) -> str | None:
    job = s.get(ReviewJob, job_id)
    return job.status if job else None
