"""The diffusion synthesizer's pieces on CPU: representation, ControlNet zero-init and freezing,
rectified-flow sampler and guidance, window crossfades over a 60 s shot."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from models import controlnet, diffusion, synth_ckpt, synth_pipeline, vocoder
from models.audio_env import rms_envelope
from models.audio_repr import (FRAME_RATE_HZ, HOP, N_MELS, SR, control_from_audio,
                               control_from_envelope, log_mel, n_frames)
from models.flow_sampler import flow_loss, guided, interpolate, sample, time_grid
from models.synth_windows import equal_power_fades, render_windowed, window_starts

torch.set_num_threads(1)
SFX = Path(__file__).resolve().parents[2] / "shared" / "sfx"


def _real_mel(seconds: float = 1.28) -> torch.Tensor:
    """A real recording (a door) at 48 kHz as normalized log-mel (1, N_MELS, T)."""
    import soxr

    audio, sr = sf.read(sorted((SFX / "doors").rglob("*.ogg"))[0], dtype="float32", always_2d=True)
    x = soxr.resample(audio.mean(1), sr, SR).astype(np.float32)
    n = int(seconds * SR)
    x = np.pad(x, (0, max(0, n - len(x))))[:n]
    return log_mel(torch.from_numpy(x))[None]


def test_log_mel_frames_and_silence():
    x = torch.zeros(2, 3 * SR + 17)
    m = log_mel(x)
    assert m.shape == (2, N_MELS, n_frames(3 * SR + 17)) == (2, N_MELS, 151)
    assert torch.allclose(m, torch.full_like(m, m[0, 0, 0].item()))  # silence is flat


def test_control_from_envelope_level_and_events():
    frames = 100
    loud = control_from_envelope(np.ones(200), 100.0, [], frames)
    assert np.allclose(loud[0], 1.0) and np.allclose(loud[1], 0.0)
    quiet = control_from_envelope(np.full(200, 0.01), 100.0, [{"t": 0.5, "strength": 0.7}], frames)
    assert np.allclose(quiet[0], 0.5, atol=1e-3)  # -40 dB is half way down to -80 dB
    assert int(np.argmax(quiet[1])) == round(0.5 * FRAME_RATE_HZ)
    assert quiet[1].max() == pytest.approx(0.7, abs=1e-3)


def test_control_from_audio_finds_the_hit():
    audio = np.zeros(SR, np.float32)
    audio[int(0.4 * SR):int(0.45 * SR)] = 0.5 * np.sin(np.arange(int(0.05 * SR)) * 0.3)
    ctl = control_from_audio(audio)
    assert ctl.shape == (2, n_frames(SR))
    assert abs(int(np.argmax(ctl[1])) - 0.4 * FRAME_RATE_HZ) <= 1
    assert ctl[0, :10].max() == 0.0 and ctl[0, 21] > 0.8


def test_presets_build_and_unknown_raise():
    for get in (diffusion.get_config, vocoder.get_config):
        with pytest.raises(ValueError, match="unknown"):
            get("huge")
    voc = vocoder.build(vocoder.get_config("debug"))
    mel = torch.randn(1, N_MELS, 25)
    assert voc(mel).shape == (1, 25 * HOP)


def test_vocoder_grains_sit_where_the_module_says():
    """Only sub-frame 1 of every mel frame sounds (flat magnitude, phase π·bin: a click at the
    grain's centre): the output is clicks exactly on the mel frame centres k·HOP."""
    voc = vocoder.build(vocoder.get_config("debug"))
    cfg = voc.config
    assert (cfg.n_fft, cfg.sub_frames, cfg.hop) == (960, 4, 240)
    with torch.no_grad():
        voc.head.weight.zero_()
        bias = torch.zeros(cfg.sub_frames, 3, voc.bins)
        bias[:, 0] = -30.0   # log-magnitude: silent ...
        bias[1, 0] = 0.0     # ... but sub-frame 1
        bias[:, 1] = torch.cos(torch.pi * torch.arange(voc.bins))  # phase vector (±1, 0)
        voc.head.bias.copy_(bias.reshape(-1))
        t = 12
        spec = voc.spectrum(torch.zeros(1, N_MELS, t))
        audio = voc(torch.zeros(1, N_MELS, t))[0].numpy()
    assert spec.shape == (1, voc.bins, t * cfg.sub_frames + 1)
    assert float(spec[..., -2:].abs().max()) == 0.0
    peaks = [k * HOP for k in range(1, t - 1)]
    for p in peaks:
        assert abs(int(np.argmax(np.abs(audio[p - HOP // 2:p + HOP // 2]))) - HOP // 2) <= 1
    away = np.ones(len(audio), bool)
    for p in [0, *peaks]:
        away[max(0, p - 48):p + 48] = False  # 1 ms around each click
    away[(t - 1) * HOP - 48:] = False
    assert np.abs(audio[away]).max() < 1e-3 * np.abs(audio).max()


def test_a_phase_2_vocoder_checkpoint_fails_loudly(tmp_path):
    voc = vocoder.build(vocoder.get_config("debug"))
    synth_ckpt.save(voc, voc.config, synth_pipeline.checkpoint_path(tmp_path, "vocoder", "tiny"),
                    "synth_vocoder@1", {})
    with pytest.raises(ValueError, match="not a synth_vocoder@2 checkpoint .found 'synth_vocoder@1'"):
        synth_pipeline.load_stage(tmp_path, "vocoder", "tiny")


def test_a_controlnet_for_another_denoiser_or_a_damaged_file_is_one_clear_error(tmp_path):
    """A ControlNet built for another denoiser than the base beside it, and a truncated file:
    each a ValueError naming the file and what to do (the CLI's exit 2), never a shape
    traceback at render time. (A network of another size under a preset's name loads: the
    tests' small networks are saved that way.)"""
    def save(stage: str, net, kind: str) -> Path:
        path = synth_pipeline.checkpoint_path(tmp_path, stage, "tiny")
        synth_ckpt.save(net, net.config, path, kind, {})
        return path

    save("vocoder", vocoder.build(vocoder.get_config("debug")), vocoder.CHECKPOINT_KIND)
    save("base", diffusion.build(diffusion.get_config("debug")), diffusion.CHECKPOINT_KIND)
    branch = controlnet.build(diffusion.get_config("debug", channels=(8, 16)))
    save("control", branch, controlnet.CHECKPOINT_KIND)
    with pytest.raises(ValueError, match=r"was built for another denoiser .* --stage control"):
        synth_pipeline.load(tmp_path, "tiny", need=("vocoder", "base", "control"))

    cut = synth_pipeline.checkpoint_path(tmp_path, "base", "tiny")
    cut.write_bytes(cut.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"synth_base_tiny.safetensors: not a usable base "
                                         r"checkpoint .* --stage base --preset tiny"):
        synth_pipeline.load_stage(tmp_path, "base", "tiny")


def test_a_curve_of_nan_or_a_nan_stem_is_refused_not_rendered(tmp_path):
    """The Python API refuses what the CLI and the review app refuse, and the stem writer every
    stage shares never writes NaN (it would reach every mix the stem is summed into)."""
    from tasks.wavfloat import write_float_wav

    synth = synth_pipeline.Synthesizer(vocoder.build(vocoder.get_config("debug")),
                                       diffusion.build(diffusion.get_config("debug")))
    env = {"duration_s": 0.5, "rate_hz": 100.0, "curve": [0.1] * 25 + [float("nan")] * 25,
           "events": []}
    with pytest.raises(ValueError, match="finite and non-negative.*25 NaN"):
        synth_pipeline.render_envelope(synth, env, None, steps=1)
    with pytest.raises(ValueError, match="finite and non-negative.*1 negative"):
        synth_pipeline.render_envelope(synth, {**env, "curve": [0.1] * 49 + [-0.1]}, None, steps=1)
    audio = np.zeros(100, np.float32)
    audio[7] = np.nan
    with pytest.raises(ValueError, match="stem.wav: 1 of 100 samples are NaN"):
        write_float_wav(tmp_path / "stem.wav", audio, SR)
    assert not (tmp_path / "stem.wav").exists()


def test_controlnet_zero_at_start_then_only_the_branch_learns():
    torch.manual_seed(0)
    base = diffusion.build(diffusion.get_config("debug"))
    branch = controlnet.ControlNet.from_base(base)
    mel = _real_mel()
    ctl = torch.from_numpy(control_from_audio(np.zeros(mel.shape[-1] * HOP, np.float32)))[None] + 0.5
    t, sem = torch.tensor([0.3]), torch.randn(1, 384)
    residuals = branch(mel, t, sem, ctl)
    assert all(bool((r == 0).all()) for r in residuals)
    assert torch.equal(base(mel, t, sem, control=residuals), base(mel, t, sem))

    controlnet.freeze(base)
    before_base = synth_ckpt.state_sha256(base)
    before_branch = {k: v.clone() for k, v in branch.state_dict().items()}
    opt = torch.optim.Adam([p for p in branch.parameters() if p.requires_grad], lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(2):
        loss = flow_loss(lambda x, tt: base(x, tt, sem, control=branch(x, tt, sem, ctl)), mel, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert synth_ckpt.state_sha256(base) == before_base
    assert all(p.grad is None for p in base.parameters())
    changed = [k for k, v in branch.state_dict().items() if not torch.equal(v, before_branch[k])]
    assert any(k.startswith("zero.") for k in changed) and any(k.startswith("encoder.") for k in changed)
    assert any(bool((r != 0).any()) for r in branch(mel, t, sem, ctl))


def test_flow_path_and_grid():
    x1, x0 = torch.ones(2, 3, 4), torch.zeros(2, 3, 4)
    assert torch.equal(interpolate(x1, x0, torch.tensor([0.0, 1.0]))[0], x0[0])
    assert torch.equal(interpolate(x1, x0, torch.tensor([0.0, 1.0]))[1], x1[1])
    g = time_grid(8)
    assert g[0] == 0 and g[-1] == pytest.approx(1.0) and bool((g.diff() > 0).all())


def test_sampler_integrates_a_known_flow_exactly_enough():
    # v(x, t) = target − x0 along the straight path is constant: Euler lands on the target
    target = torch.full((1, 2, 3), 0.7)
    gen = torch.Generator().manual_seed(5)
    x0 = torch.randn((1, 2, 3), generator=torch.Generator().manual_seed(5))
    out = sample(lambda x, t: (target - x) / (1 - t[:, None, None]), (1, 2, 3), steps=8,
                 generator=gen)
    assert torch.allclose(out, target, atol=1e-5) and not torch.allclose(x0, target)


def test_guidance_formula_and_seeded_determinism():
    base = diffusion.build(diffusion.get_config("debug")).eval()
    branch = controlnet.ControlNet.from_base(base).eval()
    fn = controlnet.controlled(base, branch)
    sem = torch.randn(1, 384)
    ctl = torch.rand(1, 2, 16)
    cond = {"semantic": sem, "control": ctl, "control_weight": torch.ones(1)}
    null = {"semantic": torch.zeros_like(sem), "control": ctl, "control_weight": torch.zeros(1)}
    x, t = torch.randn(1, N_MELS, 16), torch.tensor([0.4])
    with torch.no_grad():
        v_c, v_u = fn(x, t, **cond), fn(x, t, **null)
        assert torch.allclose(guided(fn, cond, null, 3.0)(x, t), v_u + 3.0 * (v_c - v_u), atol=1e-5)
        assert torch.equal(guided(fn, cond, null, 1.0)(x, t), v_c)

    def run(seed: int) -> torch.Tensor:
        return sample(guided(fn, cond, null, 2.5), (1, N_MELS, 16), steps=3,
                      generator=torch.Generator().manual_seed(seed))
    assert torch.equal(run(1), run(1)) and not torch.equal(run(1), run(2))


def test_window_plan_covers_and_aligns():
    n, w, o = 60 * SR, int(5.12 * SR), int(0.5 * SR)
    starts = window_starts(n, w, o)
    assert starts[0] == 0 and starts[-1] + w == n
    assert all(s % HOP == 0 for s in starts[:-1])
    assert all(a + w - b >= o - HOP for a, b in zip(starts, starts[1:]))
    fin, fout = equal_power_fades(1000)
    assert np.allclose(fin ** 2 + fout ** 2, 1.0)


def _level_db(x: np.ndarray) -> np.ndarray:
    return 20 * np.log10(np.maximum(rms_envelope(x, SR, 20.0, 0.2), 1e-9))


def test_sixty_seconds_have_no_level_jump_at_window_borders():
    """Independent noise per window (what the generator gives: windows share the envelope,
    not the waveform), following a 60 s envelope with hits and a slow swell. Around every
    border the level follows the target as well as inside the windows."""
    n = 60 * SR
    t = np.arange(n) / SR
    target = (0.05 + 0.04 * np.sin(2 * np.pi * t / 17)).astype(np.float32)
    w, o = int(5.12 * SR), int(0.5 * SR)

    def render(index: int, start: int, length: int) -> np.ndarray:
        noise = np.random.default_rng(index).standard_normal(length).astype(np.float32)
        return noise * target[start:start + length]

    out = render_windowed(n, w, o, render)
    err = _level_db(out) - _level_db(target * np.float32(1.0))  # target RMS = its amplitude
    starts = window_starts(n, w, o)
    border_frames = [int((s + (p + w - s) / 2) / SR * 20) for p, s in zip(starts, starts[1:])]
    near = np.zeros(len(err), bool)
    for f in border_frames:
        near[max(0, f - 5):f + 6] = True
    inside = err[~near][5:-5]
    assert len(border_frames) >= 12
    assert np.abs(err[near]).max() < np.abs(inside).max() + 0.5
    assert np.abs(err[near]).max() < 1.5  # dB; a linear crossfade dips 3 dB here
    assert abs(err[near].mean() - inside.mean()) < 0.3


def test_untrained_pipeline_generates_deterministic_windows():
    torch.manual_seed(0)
    base = diffusion.build(diffusion.get_config("debug"))
    synth = synth_pipeline.Synthesizer(vocoder.build(vocoder.get_config("debug")), base,
                                       controlnet.ControlNet.from_base(base))
    n = int(3.3 * SR)
    ctl = control_from_envelope(np.full(330, 0.1), 100.0, [{"t": 1.0, "strength": 1.0}], n_frames(n))
    kwargs = dict(n_samples=n, semantic=np.ones(384, np.float32) / np.sqrt(384), control=ctl,
                  steps=2, guidance=2.0, window_s=1.28, overlap_s=0.3)
    a = synth_pipeline.generate(synth, seed=3, **kwargs)
    assert a.shape == (n,) and a.dtype == np.float32 and np.isfinite(a).all()
    assert np.array_equal(a, synth_pipeline.generate(synth, seed=3, **kwargs))
    assert not np.array_equal(a, synth_pipeline.generate(synth, seed=4, **kwargs))
    # a length between mel frames: the windows still start on frames and reach the last
    # sample (the last window used to stop short, leaving 5–10 ms of digital silence)
    m = n + 437
    ctl = control_from_envelope(np.full(331, 0.1), 100.0, [], n_frames(m))
    b = synth_pipeline.generate(synth, seed=3, **{**kwargs, "n_samples": m, "control": ctl})
    assert b.shape == (m,) and np.count_nonzero(b[-HOP // 4:]) == HOP // 4
