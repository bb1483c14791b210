"""Ship a trained synthesizer: copy RUN/synth_<stage>_<preset>.safetensors (the best weights
`foley train synth --out RUN` kept) to models/checkpoints/ with float16 storage (half the bytes;
loading casts back to float32), atomically.
Run: .venv/bin/python scripts/ship_synth.py RUN [--preset tiny]"""
import argparse
from pathlib import Path

from flows.cli_models import SHIPPED  # where `foley generate` and the pass load from
from tasks.store import atomic_write
from models import synth_ckpt, synth_pipeline

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("run", type=Path, help="the `foley train synth --out` folder")
parser.add_argument("--preset", default="tiny")
args = parser.parse_args()
for stage in synth_pipeline.STAGES:
    src = synth_pipeline.checkpoint_path(args.run, stage, args.preset)
    dst = synth_pipeline.checkpoint_path(SHIPPED, stage, args.preset)
    atomic_write(dst, lambda tmp, src=src: synth_ckpt.save_half(src, tmp))
    print(f"{dst}: {dst.stat().st_size / 1e6:.2f} MB, sha256 {synth_ckpt.file_sha256(dst)[:16]}…")
