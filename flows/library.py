"""Sound libraries: index a folder of recordings once, and the built-in kit as the fallback."""
from __future__ import annotations

import tempfile
from dataclasses import asdict
from pathlib import Path

from db import api
from db.locks import named_lock
from flows.settings import get_settings
from models import kit
from tasks import library as library_mod
from tasks import runtime
from tasks.stage import code_version

KIT = "kit"


def index_folder(root: Path, name: str) -> int:
    """Index every recording under `root` as library `name` (replacing its previous index)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"library folder {root} does not exist or is not a folder")
    store = runtime.store()
    with tempfile.TemporaryDirectory(prefix="foley-library-") as tmp:
        sounds = library_mod.index_library(root, Path(tmp))
        rows = []
        for snd in sounds:
            fields = asdict(snd)
            ref = store.put_file(fields.pop("processed_path"), "audio/wav")
            rows.append({k: fields[k] for k in (
                "rel_path", "category", "material", "action", "caption", "kind",
                "source_sha256", "duration_s", "loudness_db")} | {"ref": ref})
    if not rows:
        raise ValueError(f"no readable recordings under {root}")
    with runtime.db().session() as s:
        act = api.start_activity(
            s, task="library-index", cache_key=name, parameters={"library": name, "root": str(root)},
            code_version=code_version([library_mod]),
        )
        api.replace_library(s, name, rows)
        api.finish_activity(s, act.id, used={}, generated={f"{name}/{r['rel_path']}": r["ref"] for r in rows},
                            result={"sounds": len(rows)})
    return len(rows)


def ensure_library(name: str) -> None:
    """Make sure library `name` is indexed; the built-in kit is synthesized on first use
    (under a lock, so two passes starting at once build it once)."""
    with named_lock(runtime.db().engine, f"foleyflow:library:{name}"):
        with runtime.db().session() as s:
            if api.library_sounds(s, name):
                return
        if name != KIT:
            raise ValueError(
                f"sound library {name!r} is not indexed: run `foley library index DIR --name {name}`"
            )
        folder = get_settings().home / "kit"
        kit.synthesize_kit(folder)
        index_folder(folder, KIT)
