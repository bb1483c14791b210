"""`foley provenance FILE`: from a delivered file back to the edit and media it came from."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from db import api
from flows.settings import get_settings
from tasks import runtime
from tasks.store import sha256_file


def describe(path: Path, *, as_json: bool = False) -> str | None:
    """The lineage of the file's content as an indented tree (or JSON); None if unknown."""
    get_settings().configure_runtime()
    with runtime.db().session() as s:
        node = api.lineage(s, sha256_file(path), role=path.name)
    if node is None:
        return None
    if as_json:
        return json.dumps(asdict(node), indent=2, default=str)
    lines: list[str] = []

    def walk(n: api.LineageNode, depth: int) -> None:
        pad = "  " * depth
        a = n.artifact
        lines.append(f"{pad}{n.role}  sha256:{a['sha256'][:16]}  {a['mime']}  {a['uri']}")
        if n.activity:
            act = n.activity
            params = {k: v for k, v in act["parameters"].items() if k not in ("reel", "shots", "manifest")}
            lines.append(f"{pad}  ← {act['task']} #{act['id']} code {act['code_version']}"
                         f"{' seed ' + str(act['seed']) if act['seed'] is not None else ''}"
                         f" at {act['ended_at']} {json.dumps(params, default=str)[:160]}")
        for child in n.inputs:
            walk(child, depth + 2)

    walk(node, 0)
    return "\n".join(lines)
