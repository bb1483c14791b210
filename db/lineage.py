"""Lineage: the chain of task runs and artifacts behind any stored file (`foley provenance`).

Walks PROV's wasGeneratedBy / used links backwards from an artifact, one completed run per
artifact (the one of the shot the walk is in, where content is shared), depth-limited so a
malformed cycle cannot recurse forever.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.schema import Activity, Artifact, Generation, Shot, Usage

MAX_DEPTH = 50


@dataclass
class LineageNode:
    """One artifact in a chain: what made it (`activity`) and from which `inputs`."""

    artifact: dict[str, Any]
    role: str
    activity: dict[str, Any] | None
    inputs: list[LineageNode]


def lineage(s: Session, sha256: str, *, role: str = "file", depth: int = 0,
            shot_id: int | None = None, activity_id: int | None = None) -> LineageNode | None:
    """The chain of activities and artifacts that produced the artifact `sha256`.

    Content is stored once, so an artifact can have several runs that wrote it: two shots'
    silent stems are one file. The run followed is `activity_id`'s if it wrote the artifact
    (a delivery's manifest names its conform run), else one of shot `shot_id`'s (the shot the
    walk came through: a shot's chain stays that shot's), else the first. A reel-level run's
    inputs named `<shot>/<kind>` (the conform's) continue as that shot's; and a file it wrote
    under `shots/<shot>/` (a shot's delivered stem) follows only that shot's inputs and the
    reel's own (the edit); a file whose name ends in one kind of those inputs
    (`<reel>_foley_stereo.wav`, `…_SH010_51.wav`) follows only the inputs of that kind."""
    art = s.scalar(select(Artifact).where(Artifact.sha256 == sha256))
    if art is None:
        return None
    gens = s.execute(
        select(Generation.role, Activity)
        .join(Activity, Activity.id == Generation.activity_id)
        .where(Generation.artifact_id == art.id, Activity.status == "completed")
        .order_by(Activity.id, Generation.role)
    ).all()
    if not gens or depth > MAX_DEPTH:
        return LineageNode(art.ref(), role, None, [])
    mine = [g for g in gens if g[1].id == activity_id] \
        or [g for g in gens if shot_id is not None and g[1].shot_id == shot_id] or gens
    # one run may have written the content under several names (two shots' identical plots):
    # the name the walk came by says which shot's
    gen_role, act = next((g for g in mine if g[0] == role), mine[0])
    parts = gen_role.split("/")
    only = parts[1] if act.shot_id is None and len(parts) > 2 and parts[0] == "shots" else None
    shots = {} if act.reel_id is None else dict(s.execute(
        select(Shot.name, Shot.id).where(Shot.reel_id == act.reel_id)).all())
    used = s.execute(
        select(Usage.role, Artifact.sha256)
        .join(Artifact, Artifact.id == Usage.artifact_id)
        .where(Usage.activity_id == act.id)
        .order_by(Usage.role)
    ).all()
    # a reel-level file named after one kind of the shots' inputs (`<reel>_foley_stereo.wav`
    # from every `<shot>/stereo`) follows only that kind: the stereo mix is not made of 5.1
    kind = None
    if act.shot_id is None:
        name = PurePosixPath(gen_role).stem
        kind = next((k for k in sorted({r.split("/", 1)[1] for r, _ in used if "/" in r})
                     if name.endswith(f"_{k}")), None)
    inputs = []
    for u_role, u_sha in used:
        of_shot = u_role.split("/")[0] if "/" in u_role else None
        if only is not None and of_shot is not None and of_shot != only:
            continue
        if kind is not None and of_shot is not None and u_role.split("/", 1)[1] != kind:
            continue
        child_shot = act.shot_id if act.shot_id is not None else shots.get(of_shot or "")
        node = lineage(s, u_sha, role=u_role, depth=depth + 1, shot_id=child_shot)
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
