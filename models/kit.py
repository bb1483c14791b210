"""The default Foley kit, synthesized by the project itself (no third-party audio).

Physically motivated recipes, deterministic from a seed:
- impacts: modal synthesis — damped sinusoids whose frequencies follow the mode ratios of a
  bar / plate / block and whose decay follows the material loss factor η (τ = 1 / (π f η), so
  high modes die first: metal rings, wood knocks, stone thuds, glass chimes) — plus a contact
  noise burst whose length and bandwidth grow softer with a softer contact.
- footsteps: heel strike then toe (60–120 ms later, softer); per surface a different contact:
  gravel = a front-loaded cloud of tiny stone grains, wood = thump + board modes, concrete =
  hard click + short scuff, grass = slow soft swish with a few crackles.
- movement: short scrapes (stick-slip impulse train through wood modes) and two loopable
  textures (cloth rustle, scrape) built circularly so the loop point is seamless.
- whooshes: noise through a band that sweeps up and down (Doppler-like) under a swell.
"""

from __future__ import annotations

import csv
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import butter, istft, sosfilt, stft

CATALOG_COLUMNS = ["path", "category", "material", "action", "caption", "package", "original",
                   "license_ref"]
PACKAGE = "foleyflow-kit"
PEAK_DBFS = -3.0


@dataclass(frozen=True)
class Material:
    """Modal parameters: fundamental range (Hz), mode ratios, loss factor, contact noise."""

    f0: tuple[float, float]
    ratios: tuple[float, ...]
    eta: float
    contact_s: float
    noise_hz: float
    noise_level: float


MATERIALS: dict[str, Material] = {
    # free-free bar ratios for wood and metal, a stiff block for stone, a bowl/pane for glass
    "wood": Material((170, 380), (1.0, 2.76, 5.40, 8.93), 0.03, 0.004, 3500, 0.35),
    "metal": Material((420, 900), (1.0, 2.76, 5.40, 8.93, 13.34, 1.51, 3.92), 0.0008, 0.0015,
                      9000, 0.25),
    "stone": Material((300, 650), (1.0, 1.62, 2.31, 3.1, 4.3, 5.7), 0.035, 0.006, 5000, 0.7),
    "glass": Material((1100, 2100), (1.0, 2.32, 4.25, 6.63, 9.38), 0.0016, 0.001, 11000, 0.2),
}


def _t(n: int, sr: int) -> np.ndarray:
    return np.arange(n) / sr


def _band(x: np.ndarray, sr: int, lo: float | None, hi: float | None, order: int = 2) -> np.ndarray:
    """Butterworth low/high/band-pass (causal, as a real contact would be)."""
    nyq = sr / 2
    if lo and hi:
        sos = butter(order, [lo / nyq, min(hi / nyq, 0.99)], "bandpass", output="sos")
    elif hi:
        sos = butter(order, min(hi / nyq, 0.99), "lowpass", output="sos")
    else:
        sos = butter(order, lo / nyq, "highpass", output="sos")
    return sosfilt(sos, x)


def _modes(freqs: np.ndarray, amps: np.ndarray, taus: np.ndarray, n: int, sr: int) -> np.ndarray:
    t = _t(n, sr)
    keep = freqs < 0.45 * sr
    out = np.zeros(n)
    for f, a, tau in zip(freqs[keep], amps[keep], taus[keep]):
        out += a * np.exp(-t / tau) * np.sin(2 * np.pi * f * t)
    return out


def impact(material: str, rng: np.random.Generator, sr: int) -> np.ndarray:
    """An object of `material` struck once: modal ring + contact noise."""
    m = MATERIALS[material]
    f0 = rng.uniform(*m.f0)
    ratios = np.array(m.ratios) * rng.uniform(0.97, 1.03, len(m.ratios))
    extra = rng.uniform(1.2, 12.0, 6)  # object-specific modes between the canonical ones
    freqs = f0 * np.concatenate([ratios, extra])
    taus = np.minimum(1.0 / (np.pi * freqs * m.eta), 2.5)
    amps = rng.uniform(0.4, 1.0, len(freqs)) / np.concatenate(
        [np.arange(1, len(ratios) + 1) ** 0.8, np.full(len(extra), 4.0)]
    )
    n = int(min(max(6.9 * taus.max(), 0.25), 2.5) * sr)
    ring = _modes(freqs, amps, taus, n, sr)
    ring /= np.abs(ring).max()
    burst = rng.normal(size=n) * np.exp(-_t(n, sr) / m.contact_s)
    burst = _band(burst, sr, 80, m.noise_hz)
    out = ring + m.noise_level * burst / np.abs(burst).max()
    if material == "wood":  # the struck object's body: a short low knock
        out += 0.5 * _modes(np.array([rng.uniform(90, 140)]), np.ones(1), np.array([0.03]), n, sr)
    return out


def _grains(n: int, sr: int, rng: np.random.Generator, times: np.ndarray,
            band: tuple[float, float], tau: tuple[float, float]) -> np.ndarray:
    """Tiny decaying sinusoids (stones, twigs, crinkles) at the given sample times."""
    out = np.zeros(n)
    for start in times.astype(int):
        length = min(n - start, int(0.006 * sr))
        if length <= 0:
            continue
        t = _t(length, sr)
        f = np.exp(rng.uniform(*np.log(band)))
        out[start : start + length] += (
            rng.uniform(0.2, 1.0) * np.exp(-t / rng.uniform(*tau)) * np.sin(2 * np.pi * f * t)
        )
    return out


def _contact(surface: str, rng: np.random.Generator, sr: int) -> np.ndarray:
    """One foot contact (heel or toe) on a surface, starting at sample 0."""
    n = int(0.35 * sr)
    t = _t(n, sr)
    thump = np.exp(-t / 0.02) * np.sin(2 * np.pi * rng.uniform(70, 110) * t)
    noise = rng.normal(size=n)
    if surface == "gravel":
        count = rng.integers(45, 80)
        times = np.sort(rng.exponential(0.03, count) * sr)
        times = times[times < 0.16 * sr]  # the crunch settles within ~160 ms
        out = _grains(n, sr, rng, times, (1500, 7000), (0.0003, 0.0012)) * np.exp(-t / 0.07)
        out += 0.15 * _band(noise, sr, 800, 6000) * np.exp(-t / 0.05)
        return out / np.abs(out).max() + 0.3 * thump
    if surface == "wood":
        board = _modes(rng.uniform(140, 700, 5), rng.uniform(0.3, 1, 5),
                       rng.uniform(0.015, 0.05, 5), n, sr)
        click = _band(noise, sr, 500, 4000) * np.exp(-t / 0.006)
        return 0.8 * thump + 0.5 * board / np.abs(board).max() + 0.5 * click / np.abs(click).max()
    if surface == "concrete":
        click = _band(noise, sr, 1500, 9000) * np.exp(-t / 0.004)
        scuff = _band(noise, sr, 300, 4000) * np.exp(-t / 0.03)
        out = click / np.abs(click).max() + 0.15 * scuff / np.abs(scuff).max()
        return out + 0.35 * thump
    if surface == "grass":
        swell = (1 - np.exp(-t / 0.006)) * np.exp(-t / rng.uniform(0.035, 0.06))
        swish = _band(noise, sr, 500, 5000) * swell
        times = rng.uniform(0.0, 0.08, rng.integers(3, 9)) * sr
        crackle = _grains(n, sr, rng, times, (2500, 8000), (0.0003, 0.0008))
        return swish / np.abs(swish).max() + 0.4 * crackle + 0.25 * thump
    raise ValueError(f"unknown surface {surface!r}; known: gravel, wood, concrete, grass")


def footstep(surface: str, rng: np.random.Generator, sr: int) -> np.ndarray:
    """Heel strike, then the toe 60–120 ms later and softer."""
    heel, toe = _contact(surface, rng, sr), _contact(surface, rng, sr)
    delay = int(rng.uniform(0.06, 0.12) * sr)
    out = np.zeros(len(heel) + delay)
    out[: len(heel)] += heel
    out[delay:] += rng.uniform(0.45, 0.75) * toe
    return out


def _stick_slip(n: int, sr: int, rng: np.random.Generator, rate: np.ndarray,
                circular: bool) -> np.ndarray:
    """Impulses at an instantaneous rate (Hz per sample) through wood modes, plus friction noise."""
    phase = np.cumsum(rate / sr * rng.uniform(0.7, 1.3, n))
    pulses = np.zeros(n)
    pulses[np.flatnonzero(np.diff(np.floor(phase), prepend=0.0) > 0)] = 1.0
    pulses *= rng.uniform(0.3, 1.0, n)
    ir = _modes(rng.uniform(300, 2600, 6), rng.uniform(0.3, 1, 6), rng.uniform(0.003, 0.012, 6),
                int(0.06 * sr), sr)
    if circular:
        excited = np.fft.irfft(np.fft.rfft(pulses) * np.fft.rfft(ir, n), n)
    else:
        excited = np.convolve(pulses, ir)[:n]
    friction = _circular_band(rng.normal(size=n), sr, 1000, 9000)
    return excited / np.abs(excited).max() + 0.25 * friction / np.abs(friction).max()


def scrape(rng: np.random.Generator, sr: int) -> np.ndarray:
    """A short scrape of wood on wood (0.4–0.8 s): quick attack, sustain, release."""
    n = int(rng.uniform(0.4, 0.8) * sr)
    t = _t(n, sr)
    rate = 120 + 80 * np.sin(np.pi * t / t[-1])
    env = (1 - np.exp(-t / 0.006)) * np.clip((t[-1] - t) / 0.15, 0, 1)
    return _stick_slip(n, sr, rng, rate, circular=False) * env


def _circular_band(x: np.ndarray, sr: int, lo: float, hi: float) -> np.ndarray:
    """Band-pass by an FFT mask: circular, so a loop built from it has no seam."""
    freqs = np.fft.rfftfreq(len(x), 1 / sr)
    mask = 1 / (1 + (lo / np.maximum(freqs, 1e-3)) ** 4) / (1 + (freqs / hi) ** 4)
    return np.fft.irfft(np.fft.rfft(x) * mask, len(x))


def _periodic_lfo(n: int, rng: np.random.Generator, cycles: range) -> np.ndarray:
    """Slow random modulation in [0, 1] that is exactly periodic over n samples."""
    t = np.arange(n) / n
    lfo = sum(rng.uniform(0.3, 1) * np.sin(2 * np.pi * k * t + rng.uniform(0, 2 * np.pi))
              for k in cycles)
    return (lfo - lfo.min()) / (lfo.max() - lfo.min())


def cloth_loop(rng: np.random.Generator, sr: int, seconds: float = 8.0) -> np.ndarray:
    """Loopable cloth rustle: band noise under gesture swells, with fabric crinkles."""
    n = int(seconds * sr)
    gesture = 0.15 + _periodic_lfo(n, rng, range(3, 12)) ** 2
    hiss = _circular_band(rng.normal(size=n), sr, 900, 9000)
    times = np.sort(rng.uniform(0, n - int(0.006 * sr), int(seconds * 90)))
    crinkle = _grains(n, sr, rng, times, (2000, 9000), (0.0002, 0.0008))
    out = gesture * (hiss / np.abs(hiss).max() + 0.6 * crinkle / np.abs(crinkle).max())
    return out


def scrape_loop(rng: np.random.Generator, sr: int, seconds: float = 8.0) -> np.ndarray:
    """Loopable sustained scrape with a slowly varying drag speed."""
    n = int(seconds * sr)
    speed = _periodic_lfo(n, rng, range(2, 7))
    out = _stick_slip(n, sr, rng, 60 + 180 * speed, circular=True)
    return out * (0.4 + 0.6 * speed)


def whoosh(rng: np.random.Generator, sr: int) -> np.ndarray:
    """Fast motion past the camera: a noise band sweeping up then down under a swell."""
    n = int(rng.uniform(0.6, 1.1) * sr)
    nfft, hop = 1024, 256
    _, _, spec = stft(rng.normal(size=n), sr, nperseg=nfft, noverlap=nfft - hop)
    freqs = np.fft.rfftfreq(nfft, 1 / sr)[:, None]
    u = np.linspace(0, 1, spec.shape[1])[None, :]
    peak_at, top = rng.uniform(0.45, 0.6), rng.uniform(1200, 3000)
    centre = 250 + (top - 250) * np.exp(-((u - peak_at) / 0.22) ** 2)
    band = np.exp(-0.5 * (np.log2(np.maximum(freqs, 20) / centre) / 0.7) ** 2)
    swell = np.exp(-((u - peak_at) / np.where(u < peak_at, 0.25, 0.15)) ** 2)
    _, out = istft(spec * band * swell, sr, nperseg=nfft, noverlap=nfft - hop)
    return out[:n]


@dataclass(frozen=True)
class KitSound:
    """One catalog row of the kit and the recipe that makes it."""

    category: str
    material: str
    action: str
    caption: str
    make: Callable[[np.random.Generator, int], np.ndarray]


def kit_recipes() -> list[KitSound]:
    """Every sound of the kit (36 files)."""
    sounds: list[KitSound] = []
    for surface in ("gravel", "wood", "concrete", "grass"):
        for _ in range(4):
            sounds.append(KitSound("footsteps", surface, "step", f"a footstep on {surface}",
                                   lambda rng, sr, s=surface: footstep(s, rng, sr)))
    for material in MATERIALS:
        for _ in range(3):
            sounds.append(KitSound("impacts", material, "hit", f"an impact on {material}",
                                   lambda rng, sr, m=material: impact(m, rng, sr)))
    sounds += [KitSound("movement", "wood", "scrape", "a scrape of wood on wood", scrape)] * 3
    sounds += [KitSound("whooshes", "air", "swish", "a whoosh through the air", whoosh)] * 3
    sounds.append(KitSound("movement", "cloth", "rustle", "a cloth rustle loop", cloth_loop))
    sounds.append(KitSound("movement", "wood", "scrape", "a sustained wood scrape loop",
                           scrape_loop))
    return sounds


def synthesize_kit(out_dir: Path, *, sr: int = 48000, seed: int = 0) -> Path:
    """Write the kit as mono 24-bit WAVs plus catalog.csv into out_dir; returns the catalog path.

    Layout CATEGORY/MATERIAL/kit_MATERIAL_ACTION_NN.wav; each sound has its own generator
    seeded from (seed, file name), so every file is reproducible on its own.
    """
    out_dir = Path(out_dir)
    rows: list[dict[str, str]] = []
    counters: dict[tuple[str, str, str], int] = {}
    for sound in kit_recipes():
        loop = sound.caption.endswith("loop")
        key = (sound.category, sound.material, sound.action + ("_loop" if loop else ""))
        counters[key] = counters.get(key, 0) + 1
        name = f"kit_{sound.material}_{key[2]}_{counters[key]:02d}"
        rel = f"{sound.category}/{sound.material}/{name}.wav"
        rng = np.random.default_rng([seed, zlib.crc32(rel.encode())])
        audio = sound.make(rng, sr)
        audio = audio / np.abs(audio).max() * 10 ** (PEAK_DBFS / 20)
        if not loop:  # 3 ms fade-out so the file never ends on a step
            k = int(0.003 * sr)
            audio[-k:] *= np.linspace(1, 0, k)
        path = out_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, audio.astype(np.float32), sr, subtype="PCM_24")
        rows.append({"path": rel, "category": sound.category, "material": sound.material,
                     "action": sound.action, "caption": sound.caption, "package": PACKAGE,
                     "original": f"{name}.wav", "license_ref": "own"})
    catalog = out_dir / "catalog.csv"
    with open(catalog, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CATALOG_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return catalog
