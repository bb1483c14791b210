"""Names in Prefect artifacts: keys Prefect accepts, markdown that shows a name as itself."""
from __future__ import annotations

import pytest
from markdown_it import MarkdownIt
from prefect.client.schemas.actions import ArtifactCreate

from flows.artifacts import artifact_key, md

NAMES = ["Reel 1", "Scène 12", "Scene 12", "第一卷", "第二卷", "R1 | v3*", "--", "reel_a",
         "[LOCK] <final>", "a\\b `c`"]


@pytest.mark.parametrize("name", NAMES)
def test_every_name_makes_a_key_prefect_accepts(name: str) -> None:
    key = artifact_key(name)
    ArtifactCreate(key=f"{key}-delivery", type="markdown", data="x")  # raises if refused


def test_keys_are_readable_and_names_that_differ_keep_their_own() -> None:
    assert artifact_key("Reel 1") == "reel-1" and artifact_key("reel_a") == "reel-a"
    assert artifact_key("Scène 12").startswith("scene-12-")
    keys = [artifact_key(n) for n in NAMES]
    assert len(set(keys)) == len(keys)


@pytest.mark.parametrize("name", NAMES)
def test_a_name_in_a_table_cell_and_a_link_reads_as_itself(name: str) -> None:
    html = MarkdownIt("commonmark").enable("table").render(
        f"| reel | shots |\n|---|---|\n| [{md(name)}](https://x/) | 2 |\n")
    cell = html.split("<td>")[1].split("</td>")[0]
    text = MarkdownIt().renderInline(md(name))
    assert cell.startswith('<a href="https://x/">') and cell.endswith("</a>"), html
    assert cell.removeprefix('<a href="https://x/">').removesuffix("</a>") == text
    assert text == (name.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
                    .replace('"', "&quot;")), text
