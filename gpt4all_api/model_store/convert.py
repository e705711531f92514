"""Convert a Hugging Face BERT checkpoint (safetensors) into a llama.cpp ``bert`` GGUF.

gpt4all's ``Embed4All`` only loads GGUF files, and the embedding model we can get
offline ships as HF safetensors. This is a minimal, torch-free port of what
llama.cpp's ``convert_hf_to_gguf.py`` (``BertModel``) does, with the details that
gpt4all 2.8.2 is strict about:

* matmul weights and the token embedding go to F16; ``token_types.weight``,
  ``position_embd.weight``, norms and biases stay F32 (an F16 ``token_types``
  makes ggml abort in ``ggml_compute_forward_add``);
* the WordPiece vocabulary is rewritten the llama.cpp way: word-initial pieces get
  a U+2581 prefix, continuation pieces lose their ``##``, ``[...]`` stay as is;
* ``general.name`` must be a name gpt4all knows (``all-MiniLM-L6-v2``), otherwise
  ``embed()`` without an explicit prefix refuses to run.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

# HF tensor name -> GGUF tensor name (the llama.cpp BERT layout).
_GLOBAL_TENSORS: dict[str, str] = {
    "embeddings.word_embeddings": "token_embd",
    "embeddings.token_type_embeddings": "token_types",
    "embeddings.position_embeddings": "position_embd",
    "embeddings.LayerNorm": "token_embd_norm",
}
_BLOCK_TENSORS: dict[str, str] = {
    "attention.self.query": "attn_q",
    "attention.self.key": "attn_k",
    "attention.self.value": "attn_v",
    "attention.output.dense": "attn_output",
    "attention.output.LayerNorm": "attn_output_norm",
    "intermediate.dense": "ffn_up",
    "output.dense": "ffn_down",
    "output.LayerNorm": "layer_output_norm",
}
# Only used for pretraining heads / bookkeeping; an embedding model doesn't need them.
_SKIPPED = ("embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias")
_KEEP_F32 = ("token_types.weight", "position_embd.weight")

_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_BLOCK_RE = re.compile(r"^(?:bert\.)?encoder\.layer\.(\d+)\.(.+)\.(weight|bias)$")
_GLOBAL_RE = re.compile(r"^(?:bert\.)?(embeddings\..+)\.(weight|bias)$")


def _gguf_tensor_name(hf_name: str) -> str | None:
    """Map an HF BERT tensor name to its GGUF name; None for tensors we drop."""
    if hf_name.removeprefix("bert.") in _SKIPPED:
        return None
    if m := _BLOCK_RE.match(hf_name):
        bid, module, kind = m.groups()
        if module in _BLOCK_TENSORS:
            return f"blk.{int(bid)}.{_BLOCK_TENSORS[module]}.{kind}"
    elif (m := _GLOBAL_RE.match(hf_name)) and m.group(1) in _GLOBAL_TENSORS:
        return f"{_GLOBAL_TENSORS[m.group(1)]}.{m.group(2)}"
    raise ValueError(f"unexpected tensor in BERT checkpoint: {hf_name}")


def _sort_key(gguf_name: str) -> tuple[int, int, str]:
    """Deterministic order: embeddings first, then blocks by index."""
    if gguf_name.startswith("blk."):
        return (1, int(gguf_name.split(".")[1]), gguf_name)
    return (0, 0, gguf_name)


def _phantom(token: str) -> str:
    """llama.cpp's WPM vocab form: ``##x`` -> ``x``, ``word`` -> ``▁word``."""
    if token.startswith("[") and token.endswith("]"):
        return token
    if token.startswith("##"):
        return token[2:]
    return "\u2581" + token


def _read_vocab(path: Path) -> list[str]:
    with path.open(encoding="utf-8") as fh:
        return [line.rstrip("\n") for line in fh]


def _pooling_type(src_dir: Path) -> Any:
    """Pooling from sentence-transformers' 1_Pooling/config.json if shipped, else mean."""
    import gguf

    cfg = src_dir / "1_Pooling" / "config.json"
    if not cfg.is_file():
        return gguf.PoolingType.MEAN
    pooling: dict[str, Any] = json.loads(cfg.read_text(encoding="utf-8"))
    if pooling.get("pooling_mode_mean_tokens"):
        return gguf.PoolingType.MEAN
    if pooling.get("pooling_mode_cls_token"):
        return gguf.PoolingType.CLS
    raise ValueError(f"unsupported pooling in {cfg}: only mean and CLS are")


def convert_bert_to_gguf(src_dir: Path, out_path: Path, name: str = "all-MiniLM-L6-v2") -> None:
    """Write ``out_path`` as an F16 llama.cpp ``bert`` GGUF built from ``src_dir``.

    ``src_dir`` needs ``config.json``, ``vocab.txt`` and ``model.safetensors``. The
    output is byte-for-byte deterministic for the same input (no timestamps).
    """
    import gguf
    from safetensors import safe_open

    src_dir = Path(src_dir)
    config: dict[str, Any] = json.loads((src_dir / "config.json").read_text(encoding="utf-8"))
    if config.get("model_type", "bert") != "bert":
        raise ValueError(f"not a BERT config: model_type={config.get('model_type')!r}")
    vocab = _read_vocab(src_dir / "vocab.txt")
    n_vocab = int(config.get("vocab_size", len(vocab)))
    if len(vocab) != n_vocab:
        raise ValueError(f"vocab.txt has {len(vocab)} tokens, config says {n_vocab}")
    token_ids = {tok: i for i, tok in enumerate(vocab)}
    missing = [tok for tok in _SPECIAL_TOKENS if tok not in token_ids]
    if missing:
        raise ValueError(f"vocab.txt lacks special tokens {missing}")

    writer = gguf.GGUFWriter(out_path, arch=gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.BERT])
    writer.add_name(name)
    writer.add_block_count(int(config["num_hidden_layers"]))
    writer.add_context_length(int(config["max_position_embeddings"]))
    writer.add_embedding_length(int(config["hidden_size"]))
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_head_count(int(config["num_attention_heads"]))
    writer.add_layer_norm_eps(float(config.get("layer_norm_eps", 1e-12)))
    writer.add_file_type(int(gguf.LlamaFileType.MOSTLY_F16))
    writer.add_causal_attention(False)
    writer.add_pooling_type(_pooling_type(src_dir))

    control = int(gguf.TokenType.CONTROL)
    normal = int(gguf.TokenType.NORMAL)
    writer.add_token_type_count(int(config.get("type_vocab_size", 2)))
    writer.add_tokenizer_model("bert")
    writer.add_token_list([_phantom(tok) for tok in vocab])
    writer.add_token_types([control if tok in _SPECIAL_TOKENS else normal for tok in vocab])
    # gpt4all's embed() frames each chunk with the BOS and EOS ids, so they are CLS/SEP.
    writer.add_bos_token_id(token_ids["[CLS]"])
    writer.add_eos_token_id(token_ids["[SEP]"])
    writer.add_unk_token_id(token_ids["[UNK]"])
    writer.add_sep_token_id(token_ids["[SEP]"])
    writer.add_pad_token_id(token_ids["[PAD]"])
    writer.add_mask_token_id(token_ids["[MASK]"])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)

    with safe_open(str(src_dir / "model.safetensors"), framework="np") as st:
        names = {hf: g for hf in st.keys() if (g := _gguf_tensor_name(hf)) is not None}  # noqa: SIM118
        for hf_name, gguf_name in sorted(names.items(), key=lambda kv: _sort_key(kv[1])):
            data = np.asarray(st.get_tensor(hf_name), dtype=np.float32)
            keep_f32 = (
                data.ndim <= 1
                or not gguf_name.endswith(".weight")
                or gguf_name.endswith("_norm.weight")
                or gguf_name in _KEEP_F32
            )
            if not keep_f32:
                data = data.astype(np.float16)
            writer.add_tensor(gguf_name, data)

    n_tensors = len(names)
    expected = 5 + 16 * int(config["num_hidden_layers"])
    if n_tensors != expected:
        raise ValueError(f"expected {expected} BERT tensors, found {n_tensors}")

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    logger.info("converted %s -> %s (%d tensors)", src_dir, out_path, n_tensors)
