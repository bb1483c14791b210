"""Lineage: the chain of task runs and artifacts behind any stored file (`foley provenance`).

Walks PROV's wasGeneratedBy / used links backwards from an artifact, one completed run per
artifact, depth-limited so a malformed cycle cannot recurse forever.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.schema import Activity, Artifact, Generation, Usage

MAX_DEPTH = 50


@dataclass
class LineageNode:
    """One artifact in a chain: what made it (`activity`) and from which `inputs`."""

    artifact: dict[str, Any]
    role: str
    activity: dict[str, Any] | None
    inputs: list[LineageNode]


def lineage(s: Session, sha256: str, *, role: str = "file", depth: int = 0) -> LineageNode | None:
    """The chain of activities and artifacts that produced the artifact `sha256`."""
    art = s.scalar(select(Artifact).where(Artifact.sha256 == sha256))
    if art is None:
        return None
    gen = s.execute(
        select(Generation, Activity)
        .join(Activity, Activity.id == Generation.activity_id)
        .where(Generation.artifact_id == art.id, Activity.status == "completed")
        .order_by(Activity.id)
        .limit(1)
    ).first()
    if gen is None or depth > MAX_DEPTH:
        return LineageNode(art.ref(), role, None, [])
    _, act = gen
    inputs = []
    for u_role, u_sha in s.execute(
        select(Usage.role, Artifact.sha256)
        .join(Artifact, Artifact.id == Usage.artifact_id)
        .where(Usage.activity_id == act.id)
        .order_by(Usage.role)
    ):
        node = lineage(s, u_sha, role=u_role, depth=depth + 1)
        if node is not None:
            inputs.append(node)
    info = {
        "id": act.id,
        "task": act.task,
        "parameters": act.parameters,
        "code_version": act.code_version,
        "checkpoint_sha256": act.checkpoint_sha256,
        "seed": act.seed,
        "prefect_flow_run_id": act.prefect_flow_run_id,
        "started_at": act.started_at.isoformat() if act.started_at else None,
        "ended_at": act.ended_at.isoformat() if act.ended_at else None,
    }
    return LineageNode(art.ref(), role, info, inputs)
