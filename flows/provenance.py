"""`foley provenance FILE`: from a delivered file back to the edit and media it came from."""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from db import api
from flows.settings import get_settings
from tasks import runtime
from tasks.store import sha256_file


class ChangedFile(ValueError):
    """The file is listed by its delivery's manifest with other content (one line)."""


def _delivery_of(path: Path) -> tuple[Path, dict[str, Any], str] | None:
    """(manifest.json, its content, the file's path in it) of the delivery folder that lists
    `path` — its own folder, or one or two above (`shots/<shot>/`); None if none does."""
    p = path.resolve()
    for folder in list(p.parents)[:3]:
        man = folder / "manifest.json"
        try:
            doc = json.loads(man.read_text(encoding="utf-8"))
            files = doc["files"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        rel = p.relative_to(folder).as_posix()
        if isinstance(files, dict) and rel in files:
            return man, doc, rel
    return None


def describe(path: Path, *, as_json: bool = False) -> str | None:
    """The lineage of the file's content as an indented tree (or JSON); None if unknown.
    A delivered file is followed through the conform run its manifest names; ChangedFile if
    the manifest lists it with other content (edited or damaged since it was delivered)."""
    get_settings().configure_runtime()
    sha = sha256_file(path)
    found = _delivery_of(path)
    role, activity_id = path.name, None
    if found is not None:
        man, doc, role = found
        if doc["files"][role] != sha:
            raise ChangedFile(
                f"{path} was changed after it was delivered: {man} lists sha256 "
                f"{str(doc['files'][role])[:16]}…, the file holds {sha[:16]}…; provenance "
                "describes what was delivered — deliver again for a fresh copy (the same "
                "`foley run … --out`)")
        prov = doc.get("provenance")
        activity_id = prov.get("conform_activity") if isinstance(prov, dict) else None
    with runtime.db().session() as s:
        node = api.lineage(s, sha, role=role,
                           activity_id=activity_id if isinstance(activity_id, int) else None)
    if node is None:
        return None
    if as_json:
        return json.dumps(asdict(node), indent=2, default=str)
    return render_tree(node)


def _when(iso: object) -> str:
    """An activity's end as people read it: `2026-11-24 19:32:04 UTC` (the database keeps
    UTC; SQLite hands it back without the zone)."""
    try:
        t = dt.datetime.fromisoformat(str(iso))
    except ValueError:
        return str(iso)
    if t.tzinfo is not None:
        t = t.astimezone(dt.timezone.utc)
    return t.strftime("%Y-%m-%d %H:%M:%S UTC")


def render_tree(node: api.LineageNode) -> str:
    """The chain as an indented tree, each artifact's own chain printed once: a reel mix reads
    every shot's stems, which share their envelope, features, proxy and media, and a second
    sighting says where it was shown instead of repeating it."""
    lines: list[str] = []
    shown: dict[tuple[str, int | None], str] = {}

    def walk(n: api.LineageNode, depth: int) -> None:
        pad = "  " * depth
        a, act = n.artifact, n.activity
        head = f"{pad}{n.role}  sha256:{a['sha256'][:16]}"
        key = (a["sha256"], act["id"] if act else None)
        if act and key in shown:
            lines.append(f"{head}  (made by {act['task']} #{act['id']}: see {shown[key]} above)")
            return
        lines.append(f"{head}  {a['mime']}  {a['uri']}")
        if act:
            shown[key] = n.role
            params = {k: v for k, v in act["parameters"].items()
                      if k not in ("reel", "shots", "manifest")}
            seed = f", seed {act['seed']}" if act["seed"] is not None else ""
            lines.append(f"{pad}  ← {act['task']} #{act['id']} at {_when(act['ended_at'])}, "
                         f"code {act['code_version']}{seed} {json.dumps(params, default=str)[:160]}")
        for child in n.inputs:
            walk(child, depth + 2)

    walk(node, 0)
    return "\n".join(lines)
