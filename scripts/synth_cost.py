"""Cost of the diffusion synthesizer: parameters, GFLOP per second of audio (torch FLOP counter;
the iSTFT is not counted), and the tiny preset's real-time factor on one CPU thread (untrained
weights: cost does not depend on them). Run: .venv/bin/python scripts/synth_cost.py"""
import time, torch, numpy as np; torch.set_num_threads(1)
from models import vocoder, diffusion, controlnet, synth_pipeline, synth_ckpt
from models.audio_repr import SR, control_from_envelope, n_frames
torch.manual_seed(0)
for preset in ("tiny", "base"):
    v = vocoder.build(vocoder.get_config(preset)); d = diffusion.build(diffusion.get_config(preset)); c = controlnet.ControlNet.from_base(d)
    x = torch.randn(1, 80, 50); t = torch.rand(1); s = torch.randn(1, 384); k = torch.rand(1, 2, 50)
    fv, fd, fc = synth_ckpt.flops(v, x), synth_ckpt.flops(d, x, t, s), synth_ckpt.flops(c, x, t, s, k)
    per_s = 16 * (2 * fd + fc) + fv
    print(f"{preset}: params vocoder {synth_ckpt.count_parameters(v)/1e6:.2f} M, denoiser {synth_ckpt.count_parameters(d)/1e6:.2f} M, controlnet {synth_ckpt.count_parameters(c)/1e6:.2f} M; "
          f"GFLOP per 1 s forward: vocoder {fv/1e9:.3f}, denoiser {fd/1e9:.3f}, controlnet {fc/1e9:.3f}; per second of audio at 16 steps + CFG: {per_s/1e9:.2f} GFLOP")
    if preset == "tiny":
        syn = synth_pipeline.Synthesizer(v, d, c); n = 10 * SR
        ctl = control_from_envelope(np.full(1000, 0.1), 100, [{"t": 1.0, "strength": 1}], n_frames(n))
        t0 = time.perf_counter(); synth_pipeline.generate(syn, n_samples=n, semantic=np.ones(384, np.float32)/19.6, control=ctl, steps=16, guidance=3.0); dt = time.perf_counter() - t0
        print(f"tiny: 10 s of 48 kHz audio (envelope + text, 16 steps, CFG 3) in {dt:.2f} s on 1 thread: RTF {dt/10:.3f}")
