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

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

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


# ---------------------------------------------------------------- people


def create_user(s: Session, name: str, role: str, password_hash: str) -> User:
    if role not in ROLES:
        raise ReviewError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    if not name or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise ReviewError(f"user name {name!r}: use letters, digits, '.', '-' or '_'")
    if s.scalar(select(User).where(User.name == name)) is not None:
        raise ReviewError(f"user {name!r} exists already")
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
        raise Forbidden(f"{user.name} is a {user.role}; this needs a {role}")


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


def take_decision(s: Session, shot: Shot, *, version: int, decision: str, user: User,
                  comment: str | None = None, expect_state: str | None = None,
                  client: str | None = None, via: str = "app") -> tuple[Decision, ReviewJob]:
    """A supervisor's decision on the shot's latest version, with its audit event and the job
    it leaves behind (synthesis and re-conform of the reel), all in the caller's transaction."""
    if decision not in DECISIONS:
        raise ReviewError(f"decision must be one of {', '.join(DECISIONS)}, not {decision!r}")
    require_role(user, "supervisor")
    comment = (comment or "").strip() or None
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


def pending_jobs(s: Session, reel_id: int | None = None, *, running: bool = True
                 ) -> list[ReviewJob]:
    """Jobs not yet done, oldest first: queued ones and (with `running`) ones a process
    claimed. A running job is abandoned if the reel's lock is free (an apply run holds it
    from claim to finish), which is what `claim_jobs`, called under that lock, relies on."""
    states = ("queued", "running") if running else ("queued",)
    q = select(ReviewJob).where(ReviewJob.status.in_(states)).order_by(ReviewJob.id)
    if reel_id is not None:
        q = q.where(ReviewJob.reel_id == reel_id)
    return list(s.scalars(q))


def claim_jobs(s: Session, reel_id: int, *, flow_run_id: str | None = None) -> list[int]:
    """Mark every unfinished job of the reel running: one apply run serves them all. Call it
    holding the reel's lock: then a job another process left running was abandoned by a
    process that died (its lock died with it) and is taken over here."""
    ids = [j.id for j in pending_jobs(s, reel_id)]
    if ids:
        s.execute(update(ReviewJob).where(ReviewJob.id.in_(ids)).values(
            status="running", claimed_at=_now(), prefect_flow_run_id=flow_run_id))
    return ids


def finish_jobs(s: Session, ids: Sequence[int], *, error: str | None = None) -> None:
    if ids:
        s.execute(update(ReviewJob).where(ReviewJob.id.in_(ids)).values(
            status="failed" if error else "done", finished_at=_now(),
            error=error[:4000] if error else None))


def reels_with_pending_jobs(s: Session) -> dict[str, bool]:
    """Reels with unfinished jobs → whether any of them is still queued (False: all are
    claimed by a run that is going on, or that died)."""
    out: dict[str, bool] = {}
    for job in pending_jobs(s):
        name = s.get(Reel, job.reel_id).name
        out[name] = out.get(name, False) or job.status == "queued"
    return out


def job_status(s: Session, job_id: int) -> str | None:
    job = s.get(ReviewJob, job_id)
    return job.status if job else None
