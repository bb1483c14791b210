"""The self-made kit and the library index, on the kit and on real recordings (../shared/sfx)."""

from __future__ import annotations

import csv
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from models.audio_env import detect_onsets, rms_envelope
from models.kit import synthesize_kit
from tasks.library_match import canon, match_sounds, match_texture
from tasks.library import (
    PEAK_CEILING_DB,
    PREROLL_S,
    TARGET_LOUDNESS_DB,
    LibrarySound,
    active_loudness_db,
    caption_from_path,
    index_library,
    load_library,
)

SFX = Path(__file__).resolve().parents[2] / "shared" / "sfx"
SR = 48000
# 20 recordings covering the known quirks: 22.05 / 44.1 / 48 kHz, stereo, decoded above
# 0 dBFS, silence before the attack (up to 1 s), shorter than 0.11 s, and a texture.
SUBSET = [
    "footsteps/gravel/ufoai_gravel1.ogg", "footsteps/gravel/ufoai_gravel2.ogg",
    "footsteps/gravel/ufoai_gravel3.ogg", "footsteps/stone/ufoai_stone3.ogg",
    "footsteps/snow/lugaru_FootStepSnow1.ogg", "footsteps/water/ufoai_splash2.ogg",
    "footsteps/wood/minetest_default_wood_footstep.1.ogg", "impacts/ground/lugaru_Land2.ogg",
    "impacts/metal/lugaru_Clank1.ogg", "impacts/metal/lugaru_Clank2.ogg",
    "breaks/metal/ufoai_breakmetal02.ogg", "breaks/glass/ufoai_breakglass02.ogg",
    "doors/wood/ufoai_door2-close.ogg", "doors/wood/ufoai_door3-close.ogg",
    "doors/wood/minetest_doors_door_open.ogg", "doors/metal/minetest_doors_steel_door_close.ogg",
    "whooshes/air/lugaru_HighWhoosh.ogg", "whooshes/air/lugaru_MoveWhoosh.ogg",
    "movement/ground/lugaru_Skid.ogg", "water/water/ufoai_water_in.ogg",
]


@pytest.fixture(scope="module")
def kit_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("kit")
    synthesize_kit(root, seed=0)
    return root


@pytest.fixture(scope="module")
def sfx_index(tmp_path_factory: pytest.TempPathFactory) -> list[LibrarySound]:
    return index_library(SFX, tmp_path_factory.mktemp("sfx_index"), paths=SUBSET)


@pytest.fixture(scope="module")
def kit_index(kit_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[LibrarySound]:
    return index_library(kit_dir, tmp_path_factory.mktemp("kit_index"))


# ---------------------------------------------------------------- the kit


def test_kit_catalog_has_the_sfx_columns_and_vocabulary(kit_dir: Path) -> None:
    with open(SFX / "catalog.csv", newline="") as fh:
        sfx_reader = csv.DictReader(fh)
        sfx_rows = list(sfx_reader)
    with open(kit_dir / "catalog.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
    assert reader.fieldnames == sfx_reader.fieldnames
    assert len(rows) >= 30
    assert {r["package"] for r in rows} == {"foleyflow-kit"}
    assert {r["license_ref"] for r in rows} == {"own"}
    assert {r["category"] for r in rows} <= {r["category"] for r in sfx_rows}
    assert {"footsteps", "impacts", "movement", "whooshes"} <= {r["category"] for r in rows}
    for row in rows:
        info = sf.info(kit_dir / row["path"])
        assert (info.samplerate, info.channels, info.subtype) == (SR, 1, "PCM_24")


def test_kit_has_round_robin_sets(kit_dir: Path) -> None:
    with open(kit_dir / "catalog.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if "loop" not in r["caption"]]
    groups: dict[tuple[str, str], int] = {}
    for r in rows:
        groups[(r["category"], r["material"])] = groups.get((r["category"], r["material"]), 0) + 1
    for surface in ("gravel", "wood", "concrete", "grass"):
        assert groups[("footsteps", surface)] >= 3
    for material in ("wood", "metal", "stone", "glass"):
        assert groups[("impacts", material)] >= 3
    assert min(groups.values()) >= 3


def test_kit_is_deterministic_from_seed(kit_dir: Path, tmp_path: Path) -> None:
    synthesize_kit(tmp_path / "same", seed=0)
    synthesize_kit(tmp_path / "other", seed=1)
    name = "impacts/metal/kit_metal_hit_01.wav"
    assert (tmp_path / "same" / name).read_bytes() == (kit_dir / name).read_bytes()
    assert (tmp_path / "other" / name).read_bytes() != (kit_dir / name).read_bytes()
    catalog = (kit_dir / "catalog.csv").read_bytes()
    assert (tmp_path / "same" / "catalog.csv").read_bytes() == catalog


def _decay_time(path: Path) -> float:
    """Seconds from the peak until the 10 ms level has fallen 40 dB."""
    x, sr = sf.read(path)
    level = 20 * np.log10(rms_envelope(x, sr) + 1e-9)
    peak = int(np.argmax(level))
    below = np.flatnonzero(level[peak:] < level[peak] - 40)
    return (below[0] if below.size else len(level) - peak) / 100


def _centroid(path: Path) -> float:
    x, sr = sf.read(path)
    spectrum = np.abs(np.fft.rfft(x))
    return float(np.sum(np.fft.rfftfreq(len(x), 1 / sr) * spectrum) / np.sum(spectrum))


def test_kit_materials_sound_like_their_physics(kit_dir: Path) -> None:
    materials = ("wood", "metal", "stone", "glass")
    hit = {m: kit_dir / f"impacts/{m}/kit_{m}_hit_01.wav" for m in materials}
    decay = {m: _decay_time(p) for m, p in hit.items()}
    assert decay["metal"] > decay["glass"] > decay["wood"] > decay["stone"]
    assert decay["metal"] > 0.5 and decay["stone"] < 0.1
    assert _centroid(hit["glass"]) > _centroid(hit["metal"]) > _centroid(hit["wood"])


@pytest.mark.parametrize("surface", ["wood", "concrete"])
def test_kit_footsteps_have_heel_and_toe(kit_dir: Path, surface: str) -> None:
    x, sr = sf.read(kit_dir / f"footsteps/{surface}/kit_{surface}_step_01.wav")
    onsets = detect_onsets(x, sr)
    assert onsets[0] == pytest.approx(0.0, abs=0.001)
    assert any(0.055 < t < 0.125 for t in onsets[1:])


def test_kit_loops_are_seamless(kit_dir: Path) -> None:
    for name in ("movement/cloth/kit_cloth_rustle_loop_01.wav",
                 "movement/wood/kit_wood_scrape_loop_01.wav"):
        x, _ = sf.read(kit_dir / name)
        typical = np.percentile(np.abs(np.diff(x)), 99.9)
        assert abs(x[0] - x[-1]) <= typical


# ---------------------------------------------------------------- the index


def test_index_handles_rates_channels_overs_and_short_files(sfx_index: list[LibrarySound]) -> None:
    assert [s.rel_path for s in sfx_index] == sorted(SUBSET)
    assert {s.source_sr for s in sfx_index} == {22050, 44100, 48000}
    assert {s.source_channels for s in sfx_index} == {1, 2}
    for sound in sfx_index:
        audio, sr = sf.read(sound.processed_path, dtype="float32", always_2d=True)
        assert sr == SR and audio.shape[1] == 1
        assert sf.info(sound.processed_path).subtype == "FLOAT"
        assert np.max(np.abs(audio)) <= 10 ** (PEAK_CEILING_DB / 20) + 1e-6
        assert sound.duration_s == pytest.approx(len(audio) / SR)
        assert active_loudness_db(audio[:, 0], SR) == pytest.approx(sound.loudness_db, abs=0.01)
        assert sound.loudness_db <= TARGET_LOUDNESS_DB + 0.01
        assert len(sound.source_sha256) == 64 and sound.source_sha256[:24] in sound.processed_path
    hot = {s.rel_path: s for s in sfx_index}["impacts/ground/lugaru_Land2.ogg"]
    source, _ = sf.read(SFX / hot.rel_path)
    assert np.max(np.abs(source)) > 1.0  # the quirk is really there
    near_target = [s for s in sfx_index if s.loudness_db > TARGET_LOUDNESS_DB - 3]
    assert len(near_target) >= 0.75 * len(sfx_index)


def test_attack_is_at_the_preroll_and_edges_are_faded(sfx_index: list[LibrarySound]) -> None:
    by_path = {s.rel_path: s for s in sfx_index}
    # these start with silence (up to 1 s) before a clear attack
    for rel in ("breaks/metal/ufoai_breakmetal02.ogg", "doors/wood/ufoai_door2-close.ogg",
                "footsteps/gravel/ufoai_gravel1.ogg", "impacts/metal/lugaru_Clank1.ogg",
                "doors/metal/minetest_doors_steel_door_close.ogg"):
        sound = by_path[rel]
        audio, _ = sf.read(sound.processed_path)
        onsets = detect_onsets(audio, SR, threshold_db=-60)
        assert onsets[0] == pytest.approx(PREROLL_S, abs=0.001), rel
        assert sound.attack_s == PREROLL_S
    source, sr = sf.read(SFX / "breaks/metal/ufoai_breakmetal02.ogg")
    assert by_path["breaks/metal/ufoai_breakmetal02.ogg"].duration_s < len(source) / sr - 0.9
    for sound in sfx_index:
        audio, _ = sf.read(sound.processed_path)
        peak = np.max(np.abs(audio))
        assert abs(audio[0]) < 0.01 * peak and abs(audio[-1]) < 0.01 * peak, sound.rel_path
        pre = int(PREROLL_S * SR)
        assert np.max(np.abs(np.diff(audio[: pre + 1]))) < 0.25 * peak, sound.rel_path


def test_kinds_and_captions(sfx_index: list[LibrarySound], kit_index: list[LibrarySound]) -> None:
    by_path = {s.rel_path: s for s in sfx_index}
    wading = by_path["water/water/ufoai_water_in.ogg"]
    assert (wading.kind, wading.caption, wading.category) == ("texture", "wading in water", "water")
    assert by_path["movement/ground/lugaru_Skid.ogg"].kind == "oneshot"  # 0.5 s: too short to loop
    assert by_path["footsteps/gravel/ufoai_gravel1.ogg"].caption == "a footstep on gravel"
    textures = {s.rel_path for s in kit_index if s.kind == "texture"}
    assert textures == {"movement/cloth/kit_cloth_rustle_loop_01.wav",
                        "movement/wood/kit_wood_scrape_loop_01.wav"}
    assert caption_from_path("footsteps/gravel/step_03.wav") == {
        "category": "footsteps", "material": "gravel", "action": "step",
        "caption": "footsteps gravel step 03"}


def test_index_without_catalog_and_with_a_broken_file(tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "recordings"
    (root / "footsteps" / "gravel").mkdir(parents=True)
    shutil.copy(SFX / "footsteps/gravel/ufoai_gravel1.ogg", root / "footsteps/gravel/step_03.ogg")
    (root / "footsteps" / "gravel" / "broken.wav").write_bytes(b"RIFF\x00\x00not audio at all")
    (root / "footsteps" / "gravel" / "empty.flac").write_bytes(b"")
    (root / "notes.txt").write_text("not a recording")
    x, _ = sf.read(SFX / "impacts/metal/lugaru_Clank1.ogg")
    sf.write(root / "clank.flac", x, 22050)
    with caplog.at_level(logging.WARNING, logger="tasks.library"):
        sounds = index_library(root, tmp_path / "index")
    assert [s.rel_path for s in sounds] == ["clank.flac", "footsteps/gravel/step_03.ogg"]
    step = sounds[1]
    assert (step.category, step.material, step.action, step.caption) == (
        "footsteps", "gravel", "step", "footsteps gravel step 03")
    assert sounds[0].category == "clank"
    summary = [r.getMessage() for r in caplog.records if "skipped 2" in r.getMessage()]
    assert summary and "broken.wav" in summary[0] and "empty.flac" in summary[0]


def test_index_is_idempotent_and_deterministic(sfx_index: list[LibrarySound],
                                               tmp_path: Path) -> None:
    out = Path(sfx_index[0].processed_path).parents[1]
    stamps = {p: p.stat().st_mtime_ns for p in (out / "audio").iterdir()}
    again = index_library(SFX, out, paths=SUBSET)
    assert again == sfx_index
    assert {p: p.stat().st_mtime_ns for p in (out / "audio").iterdir()} == stamps
    assert load_library(out) == sfx_index
    elsewhere = index_library(SFX, tmp_path, paths=[s.rel_path for s in sfx_index[:3]])
    for a, b in zip(elsewhere, sfx_index[:3]):
        assert Path(a.processed_path).name == Path(b.processed_path).name
        assert Path(a.processed_path).read_bytes() == Path(b.processed_path).read_bytes()


def test_whole_sfx_folder(tmp_path: Path) -> None:
    sounds = index_library(SFX, tmp_path)
    assert len(sounds) == 174
    assert sum(s.kind == "texture" for s in sounds) == 3  # the three wading recordings
    assert all(s.loudness_db <= TARGET_LOUDNESS_DB + 0.01 for s in sounds)
    assert sum(s.loudness_db > TARGET_LOUDNESS_DB - 1 for s in sounds) >= 160


# ---------------------------------------------------------------- matching


def test_light_stemming() -> None:
    assert canon("footsteps") == canon("footstep") == canon("step") == canon("Steps")
    assert canon("wooden") == canon("wood")
    assert canon("hitting") == canon("hit") and canon("whooshes") == canon("whoosh")
    assert canon("rustling") == canon("rustle") and canon("glass") != canon("gla")


@pytest.mark.parametrize(
    ("hint", "kind", "category", "material"),
    [
        ("footsteps gravel", "step", "footsteps", "gravel"),
        ("footstep on gravel", "impact", "footsteps", "gravel"),
        ("a heavy wooden door slams", "impact", "doors", "wood"),
        ("metal clank", "impact", "impacts", "metal"),
        (None, "step", "footsteps", None),
        (None, "impact", "impacts", None),
        (None, "whoosh", "whooshes", "air"),
        (None, "scrape", "movement", None),
        ("something unheard of", "whoosh", "whooshes", "air"),
    ],
)
def test_match_sounds_on_sfx(sfx_index: list[LibrarySound], hint: str | None, kind: str,
                             category: str, material: str | None) -> None:
    found = match_sounds(sfx_index, hint, kind)
    assert found and all(s.kind == "oneshot" for s in found)
    assert found[0].category == category
    if material:
        assert found[0].material == material
    if category == "footsteps" and material:
        assert len(found) >= 3 and {s.material for s in found} == {material}


def test_match_on_the_kit(kit_index: list[LibrarySound]) -> None:
    gravel = match_sounds(kit_index, "footsteps gravel", "step")
    assert [s.material for s in gravel] == ["gravel"] * 4
    wood = match_sounds(kit_index, "a heavy wooden crate drops", "impact")
    assert {(s.category, s.material) for s in wood} == {("impacts", "wood")} and len(wood) == 3
    assert {s.category for s in match_sounds(kit_index, None, "scrape")} == {"movement"}
    assert match_sounds(kit_index, "bells", "sing") == []
    assert match_texture(kit_index, None, "step")[0].material == "cloth"
    assert match_texture(kit_index, "chair dragged", "scrape")[0].action == "scrape"
    assert match_texture(kit_index, "cloth", "scrape")[0].material == "cloth"
    sfx_like = [s for s in kit_index if s.kind == "oneshot"]
    assert match_texture(sfx_like, None, "step") == []
