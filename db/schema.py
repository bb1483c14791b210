"""The provenance schema: reels, shots, envelopes and decisions, plus W3C PROV in tables.

Entities are `Artifact` rows (content hash + uri), activities are `Activity` rows (one task run),
agents are `Agent` rows (people, models, policies). `Usage`, `Generation` and `Derivation` are
PROV's used / wasGeneratedBy / wasDerivedFrom.
"""
from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Optional

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

intpk = Annotated[int, mapped_column(primary_key=True)]
created = Annotated[
    dt.datetime, mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)
]
sha256 = Annotated[str, mapped_column(String(64))]
# JSON on SQLite, JSONB on Postgres (binary, indexable, compared by value).
JSONDoc = JSON().with_variant(JSONB(), "postgresql")
# A small JSON object column, `{}` when nothing is given (also for rows written by plain SQL).
json_obj = Annotated[
    dict[str, Any], mapped_column(JSONDoc, default=dict, server_default=text("'{}'"))
]


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSONDoc, list[Any]: JSONDoc}


class Agent(Base):
    """Who or what is responsible: `user:anna`, `policy:auto`, `model:rms-mapper@sha256:…`."""

    __tablename__ = "agents"
    id: Mapped[intpk]
    name: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(20))  # person | policy | model | software
    created_at: Mapped[created]


class Artifact(Base):
    """A stored file, identified by its content."""

    __tablename__ = "artifacts"
    id: Mapped[intpk]
    sha256: Mapped[sha256] = mapped_column(unique=True)
    uri: Mapped[str] = mapped_column(Text)
    bytes: Mapped[int] = mapped_column(BigInteger)  # camera originals exceed 2 GiB
    mime: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[created]

    def ref(self) -> dict[str, Any]:
        return {"uri": self.uri, "sha256": self.sha256, "bytes": self.bytes, "mime": self.mime}


class Reel(Base):
    """A locked edit. Identified by name; re-ingesting a changed edit updates it in place."""

    __tablename__ = "reels"
    id: Mapped[intpk]
    name: Mapped[str] = mapped_column(String(200), unique=True)
    timeline_path: Mapped[str] = mapped_column(Text)
    timeline_artifact_id: Mapped[Optional[int]] = mapped_column(ForeignKey("artifacts.id"))
    rate_num: Mapped[int]
    rate_den: Mapped[int]
    drop_frame: Mapped[bool]
    start_frame: Mapped[int]
    start_timecode: Mapped[str] = mapped_column(String(20))
    delivery_dir: Mapped[Optional[str]] = mapped_column(Text)
    # What the last pass was run with (library, seed): a decision's re-conform renders the
    # same way the pass did.
    pass_params: Mapped[json_obj]
    created_at: Mapped[created]
    updated_at: Mapped[created] = mapped_column(onupdate=func.now())
    shots: Mapped[list[Shot]] = relationship(back_populates="reel", order_by="Shot.index")


class Shot(Base):
    """One visible picture clip of a reel, on the record side."""

    __tablename__ = "shots"
    __table_args__ = (UniqueConstraint("reel_id", "name"),)
    id: Mapped[intpk]
    reel_id: Mapped[int] = mapped_column(ForeignKey("reels.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    index: Mapped[int]
    clip_name: Mapped[str] = mapped_column(Text)
    record_in_frame: Mapped[int]
    duration_frames: Mapped[int]
    record_in_s: Mapped[float]
    duration_s: Mapped[float]
    source_path: Mapped[Optional[str]] = mapped_column(Text)
    source_in_s: Mapped[float]
    source_rate: Mapped[float]
    foley_hint: Mapped[Optional[str]] = mapped_column(Text)
    # in_edit is False once a later version of the edit no longer contains the shot.
    in_edit: Mapped[bool] = mapped_column(default=True, server_default=true())
    skipped_reason: Mapped[Optional[str]] = mapped_column(Text)
    reel: Mapped[Reel] = relationship(back_populates="shots")
    envelopes: Mapped[list[Envelope]] = relationship(
        back_populates="shot", order_by="Envelope.version"
    )


class Envelope(Base):
    """One version of a shot's editable envelope. Edits and retakes add versions."""

    __tablename__ = "envelopes"
    __table_args__ = (
        UniqueConstraint("shot_id", "version"),
        CheckConstraint("version >= 1", name="version_positive"),
        CheckConstraint(
            "state IN ('pending_review', 'approved', 'retake_requested', 'omitted')",
            name="state",
        ),
    )
    id: Mapped[intpk]
    shot_id: Mapped[int] = mapped_column(ForeignKey("shots.id", ondelete="CASCADE"))
    version: Mapped[int]
    parent_version: Mapped[Optional[int]]
    artifact_id: Mapped[int] = mapped_column(ForeignKey("artifacts.id"))
    # Hash of the curve, events and prompt only: the same content under another version number
    # is recognised (a rerun re-predicting the same envelope adds no version).
    content_sha256: Mapped[sha256]
    source: Mapped[str] = mapped_column(Text)
    # pending_review | approved | retake_requested | omitted  — derived from the latest decision
    state: Mapped[str] = mapped_column(
        String(20), default="pending_review", server_default="pending_review"
    )
    created_by: Mapped[Optional[int]] = mapped_column(ForeignKey("agents.id"))
    created_at: Mapped[created]
    # What the queue shows of the file, kept with the row so a queue is one query (no store
    # reads): the number of events, their lowest confidence and the model's doubt (None when
    # the file has none). `events` is None only on versions saved before migration 0005;
    # `decisions.summaries` fills those from the file on first read.
    events: Mapped[Optional[int]]
    confidence: Mapped[Optional[float]]
    doubt: Mapped[Optional[float]]
    # A prediction (created_by None): when a pass that completed reported it, saying so if it
    # went over a person's work (`decisions.unreported`); None until then, so a pass that
    # aborted after saving it leaves the note to the next. Always None on a person's edit.
    reported_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime(timezone=True))
    shot: Mapped[Shot] = relationship(back_populates="envelopes")
    artifact: Mapped[Artifact] = relationship()
    decisions: Mapped[list[Decision]] = relationship(
        back_populates="envelope", order_by="Decision.id"
    )


class Decision(Base):
    """A review decision on one envelope version. Auto-approval is a decision by `policy:auto`."""

    __tablename__ = "decisions"
    __table_args__ = (
        CheckConstraint(
            "decision IN ('approved', 'retake_requested', 'omitted')", name="decision"
        ),
    )
    id: Mapped[intpk]
    envelope_id: Mapped[int] = mapped_column(
        ForeignKey("envelopes.id", ondelete="CASCADE"), index=True
    )
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id"))
    decision: Mapped[str] = mapped_column(String(20))  # approved | retake_requested | omitted
    comment: Mapped[Optional[str]] = mapped_column(Text)
    params: Mapped[json_obj]
    created_at: Mapped[created]
    envelope: Mapped[Envelope] = relationship(back_populates="decisions")
    agent: Mapped[Agent] = relationship()


class Activity(Base):
    """One run of one task. `cache_key` identifies its inputs; a completed run is reused."""

    __tablename__ = "activities"
    __table_args__ = (
        Index("ix_activities_task_cache_key", "task", "cache_key"),
        CheckConstraint("status IN ('running', 'completed', 'failed')", name="status"),
    )
    id: Mapped[intpk]
    task: Mapped[str] = mapped_column(String(100))
    cache_key: Mapped[sha256]
    parameters: Mapped[json_obj]
    code_version: Mapped[str] = mapped_column(String(100))
    checkpoint_sha256: Mapped[Optional[str]] = mapped_column(String(64))
    seed: Mapped[Optional[int]] = mapped_column(BigInteger)  # 32-bit unsigned seeds
    # Indexed: deleting a reel or shot sets these to NULL, which must not scan every run.
    reel_id: Mapped[Optional[int]] = mapped_column(
        ForeignKey("reels.id", ondelete="SET NULL"), index=True
    )
    shot_id: Mapped[Optional[int]] = mapped_column(
        ForeignKey("shots.id", ondelete="SET NULL"), index=True
    )
    agent_id: Mapped[Optional[int]] = mapped_column(ForeignKey("agents.id"))
    prefect_flow_run_id: Mapped[Optional[str]] = mapped_column(String(64))
    prefect_task_run_id: Mapped[Optional[str]] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(20))  # running | completed | failed
    error: Mapped[Optional[str]] = mapped_column(Text)
    # Non-artifact results (small JSON), e.g. a proxy's frame count.
    result: Mapped[json_obj]
    started_at: Mapped[created]
    ended_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime(timezone=True))


class ShotStage(Base):
    """The run of a stage whose outputs a shot uses now. Runs are cached by content, so this is
    the shot's own run, or another's the cache gave it: a shot of the same source range, an
    earlier cut, another reel of the same media — whose `shot_id` is not this shot's. Set by
    `tasks.stage.run_stage` on every computed or reused run; read by `db.api.shot_outputs`."""

    __tablename__ = "shot_stages"
    shot_id: Mapped[int] = mapped_column(
        ForeignKey("shots.id", ondelete="CASCADE"), primary_key=True
    )
    task: Mapped[str] = mapped_column(String(100), primary_key=True)
    activity_id: Mapped[int] = mapped_column(
        ForeignKey("activities.id", ondelete="CASCADE"), index=True
    )


class Usage(Base):
    """PROV `used`: an activity read an artifact in a role."""

    __tablename__ = "usages"
    activity_id: Mapped[int] = mapped_column(
        ForeignKey("activities.id", ondelete="CASCADE"), primary_key=True
    )
    # Indexed: lineage walks from an artifact to the runs that used or wrote it.
    artifact_id: Mapped[int] = mapped_column(
        ForeignKey("artifacts.id"), primary_key=True, index=True
    )
    role: Mapped[str] = mapped_column(String(300), primary_key=True)


class Generation(Base):
    """PROV `wasGeneratedBy`: an activity wrote an artifact in a role."""

    __tablename__ = "generations"
    activity_id: Mapped[int] = mapped_column(
        ForeignKey("activities.id", ondelete="CASCADE"), primary_key=True
    )
    # Indexed: lineage walks from an artifact to the runs that used or wrote it.
    artifact_id: Mapped[int] = mapped_column(
        ForeignKey("artifacts.id"), primary_key=True, index=True
    )
    role: Mapped[str] = mapped_column(String(300), primary_key=True)


class Derivation(Base):
    """PROV `wasDerivedFrom`: an artifact was made from another (written when an activity ends)."""

    __tablename__ = "derivations"
    derived_id: Mapped[int] = mapped_column(ForeignKey("artifacts.id"), primary_key=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("artifacts.id"), primary_key=True, index=True)
    activity_id: Mapped[int] = mapped_column(
        ForeignKey("activities.id", ondelete="CASCADE"), primary_key=True
    )


class LibrarySound(Base):
    """One indexed recording of a sound library, processed once at index time."""

    __tablename__ = "library_sounds"
    __table_args__ = (UniqueConstraint("library", "rel_path"),)
    id: Mapped[intpk]
    library: Mapped[str] = mapped_column(String(200))
    rel_path: Mapped[str] = mapped_column(Text)
    category: Mapped[str] = mapped_column(String(100))
    material: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(100))
    caption: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(20))  # oneshot | texture
    source_sha256: Mapped[sha256]
    artifact_id: Mapped[int] = mapped_column(ForeignKey("artifacts.id"))
    duration_s: Mapped[float]
    loudness_db: Mapped[float]
    artifact: Mapped[Artifact] = relationship()


# ---------------------------------------------------------------- the review app


class User(Base):
    """A person who signs in to the review app. Their decisions are made as agent `user:<name>`.

    Roles: viewer (looks), editor (also edits envelopes), supervisor (also decides)."""

    __tablename__ = "users"
    __table_args__ = (
        CheckConstraint("role IN ('viewer', 'editor', 'supervisor')", name="role"),
    )
    id: Mapped[intpk]
    name: Mapped[str] = mapped_column(String(100), unique=True)
    role: Mapped[str] = mapped_column(String(20))
    password_hash: Mapped[str] = mapped_column(Text)  # argon2id, PHC string
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id"))
    active: Mapped[bool] = mapped_column(default=True, server_default=true())
    created_at: Mapped[created]


class UserSession(Base):
    """A signed-in browser. Only the SHA-256 of the cookie's token is stored."""

    __tablename__ = "user_sessions"
    id: Mapped[intpk]
    token_sha256: Mapped[sha256] = mapped_column(unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[created]
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    client: Mapped[Optional[str]] = mapped_column(String(200))
    user: Mapped[User] = relationship()


class LoginAttempt(Base):
    """A failed sign-in, kept for rate limiting (per user name and per client address)."""

    __tablename__ = "login_attempts"
    id: Mapped[intpk]
    username: Mapped[str] = mapped_column(String(100), index=True)
    client: Mapped[str] = mapped_column(String(200), index=True)
    at: Mapped[created]


class AuditEvent(Base):
    """Who did what to which shot, from where: sign-ins, edits, decisions, refusals."""

    __tablename__ = "audit_events"
    id: Mapped[intpk]
    at: Mapped[created]
    actor: Mapped[str] = mapped_column(String(200))  # agent name, or the name someone typed
    action: Mapped[str] = mapped_column(String(50), index=True)
    reel: Mapped[Optional[str]] = mapped_column(String(200))
    shot: Mapped[Optional[str]] = mapped_column(String(100))
    version: Mapped[Optional[int]]
    client: Mapped[Optional[str]] = mapped_column(String(200))
    details: Mapped[json_obj]


class ReviewJob(Base):
    """Work a decision leaves behind (synthesis, re-conform), written in the decision's
    transaction so it cannot be lost; drained by the `foley-review-apply` flow."""

    __tablename__ = "review_jobs"
    __table_args__ = (
        CheckConstraint("status IN ('queued', 'running', 'done', 'failed')", name="status"),
    )
    id: Mapped[intpk]
    reel_id: Mapped[int] = mapped_column(ForeignKey("reels.id", ondelete="CASCADE"), index=True)
    decision_id: Mapped[Optional[int]] = mapped_column(
        ForeignKey("decisions.id", ondelete="SET NULL"))
    reason: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), default="queued", server_default="queued")
    created_at: Mapped[created]
    claimed_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime(timezone=True))
    prefect_flow_run_id: Mapped[Optional[str]] = mapped_column(String(64))
    error: Mapped[Optional[str]] = mapped_column(Text)  # the last failure
    attempts: Mapped[int] = mapped_column(default=0, server_default="0")  # failed runs


# ---------------------------------------------------------------- overnight passes


class InboxReel(Base):
    """One version of a reel found in the inbox: a timeline file and the media it names,
    identified by the hash of their content. A version is taken once (`db.inbox.claim`)."""

    __tablename__ = "inbox_reels"
    __table_args__ = (
        UniqueConstraint("inbox", "path", "content_sha256"),
        CheckConstraint("status IN ('running', 'done', 'failed', 'rejected')", name="status"),
    )
    id: Mapped[intpk]
    inbox: Mapped[str] = mapped_column(Text)  # the inbox folder or s3:// prefix
    path: Mapped[str] = mapped_column(Text)  # the timeline, relative to the inbox
    content_sha256: Mapped[sha256]
    reel: Mapped[Optional[str]] = mapped_column(String(200))
    # running | done (the pass ran; shots may wait for review) | failed (the pass could not
    # finish: taken again next time) | rejected (the edit cannot be read: not retried)
    status: Mapped[str] = mapped_column(String(20))
    attempts: Mapped[int] = mapped_column(default=1, server_default=text("1"))
    worker: Mapped[Optional[str]] = mapped_column(String(200))
    prefect_flow_run_id: Mapped[Optional[str]] = mapped_column(String(64))
    delivery_dir: Mapped[Optional[str]] = mapped_column(Text)
    # Shot counts by status, picture seconds, stage seconds (the morning summary's numbers).
    summary: Mapped[json_obj]
    error: Mapped[Optional[str]] = mapped_column(Text)
    created_at: Mapped[created]
    started_at: Mapped[created]
    finished_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime(timezone=True))


class ShotRun(Base):
    """A shot worked by a `foley-shots` flow run (scale-out): which worker, how long, outcome."""

    __tablename__ = "shot_runs"
    id: Mapped[intpk]
    shot_id: Mapped[int] = mapped_column(ForeignKey("shots.id", ondelete="CASCADE"), index=True)
    worker: Mapped[str] = mapped_column(String(200))
    prefect_flow_run_id: Mapped[Optional[str]] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(20))
    seconds: Mapped[float]
    created_at: Mapped[created]
