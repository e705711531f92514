"""Tiny synthetic GGUF models for tests (a helper module, not a test file).

Real models make assertions fuzzy and tests slow. :func:`build_tiny_model` writes
a ~0.1 MB llama-architecture GGUF that gpt4all loads in milliseconds and that,
whatever the prompt, answers with a fixed sentence and then its EOS token, so
tests can assert exact strings, token counts, stop sequences and streaming.

How it works: attention and FFN weights are all zero, so the final hidden state
is just the (RMS-normed) embedding of the last token, and ``output.weight`` is
chosen so the next token is a function of the last one:

* the sentence is emitted by dedicated token ids ``o_1..o_K``, one per piece of
  :func:`sentence_pieces`, with ``o_i -> o_{i+1}`` and ``o_K -> EOS``;
* every other token (BOS, byte tokens, control tokens, EOS) maps to ``o_1``.

The vocabulary holds nothing else: ``<unk> <s> </s> <|im_start|> <|im_end|>``,
the 256 byte tokens ``<0x00>..<0xFF>``, ``▁`` and the pieces. Pieces keep literal
spaces (not ``▁``) and are never one or two bare characters, so llama.cpp's SPM
tokenizer cannot produce them from prompt text: a prompt costs one token per UTF-8
byte (a space is one ``▁``; parsed special tokens one each; measured: after
``generate(p, max_tokens=0)`` ``model.context.n_past == len(p.encode()) + 4``), and
the answer starts at the first piece whatever the prompt ends with, even the sentence
itself. The winning logit leads all others by 50, so sampling with temperatures up
to ~2, any top-k/top-p and the usual repeat penalties picks the same tokens as
temperature 0.

EOS is ``<|im_end|>`` (the ChatML end-of-turn, as in SmolLM2); ``</s>`` exists but
is never produced. The generated text equals ``sentence`` exactly (no added
leading space).
"""

from __future__ import annotations

import re
from pathlib import Path

import gguf
import numpy as np

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
DEFAULT_SENTENCE = "Hello, I am a tiny test model."
TINY_MODEL_NAME = "tiny-test-model"

UNK, BOS, EOS_S, IM_START, IM_END = "<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"
EOS = IM_END  # the token that ends every answer
SPACE = "\u2581"  # SentencePiece's escaped space

_LOGIT_GAP = 50.0
_N_CTX = 2048
_N_HEAD = 2
_N_FF = 32


def _fixed_tokens() -> list[str]:
    """The vocabulary before the sentence pieces: specials, bytes, ``▁``."""
    return [UNK, BOS, EOS_S, IM_START, IM_END, *(f"<0x{b:02X}>" for b in range(256)), SPACE]


def _reachable(piece: str, vocab: set[str]) -> bool:
    """Whether llama.cpp's SPM tokenizer could produce ``piece`` from prompt text.

    It starts from single characters and only merges a pair when the joined text
    is itself a vocab entry; prompt spaces are escaped to ``▁`` first, so a piece
    holding a literal space can never be formed.
    """
    if " " in piece:
        return False
    if len(piece) == 1:
        return True

    def formable(part: str) -> bool:
        return len(part) == 1 or (part in vocab and _reachable(part, vocab))

    return any(formable(piece[:i]) and formable(piece[i:]) for i in range(1, len(piece)))


def sentence_pieces(sentence: str) -> list[str]:
    """Split ``sentence`` into the pieces the tiny model emits, one token each.

    A piece is a run of non-space characters with its leading whitespace (so
    punctuation sticks to its word: ``["Hello,", " I", " am", ...]``); spaces are
    kept literal rather than SentencePiece's ``▁`` so prompts can never tokenize
    into an output token. Repeated pieces, and pieces a prompt could still produce
    (one or two characters without a space), are glued to a neighbour, because
    llama.cpp aborts on duplicate token texts and the answer must not depend on
    the prompt. ``len(sentence_pieces(s))`` is the number of tokens generated
    before EOS.
    """
    raw = re.findall(r"\s*\S+|\s+$", sentence)
    if "".join(raw) != sentence:  # pragma: no cover - the regex covers all text
        raise ValueError(f"cannot split {sentence!r} into pieces")
    reserved = set(_fixed_tokens())
    pieces: list[str] = []
    for piece in raw:
        merged = piece
        while merged in pieces or merged in reserved:
            if not pieces:
                raise ValueError(f"{sentence!r} starts with the special token text {merged!r}")
            merged = pieces.pop() + merged
        pieces.append(merged)
    changed = True
    while changed and len(pieces) > 1:
        changed = False
        vocab = {*pieces, SPACE}
        for i, piece in enumerate(pieces):
            if _reachable(piece, vocab):
                j = i - 1 if i > 0 else i + 1
                lo, hi = min(i, j), max(i, j)
                pieces[lo : hi + 1] = [pieces[lo] + pieces[hi]]
                changed = True
                break
    if len(set(pieces)) != len(pieces):  # pragma: no cover - merging above prevents it
        raise ValueError(f"cannot split {sentence!r} into distinct pieces")
    return pieces


def _reply_pieces(reply: tuple[str, str] | None, pieces: list[str]) -> list[str]:
    """The pieces of the second answer (after ``reply``'s trigger token), checked against
    the first answer's: no duplicate token texts, none a prompt could produce."""
    if reply is None:
        return []
    trigger, sentence = reply
    extra = sentence_pieces(sentence)
    vocab = {*pieces, *extra, SPACE}
    clash = [p for p in extra if p in pieces or p == trigger or _reachable(p, vocab)]
    if not extra or clash or trigger in pieces or trigger in _fixed_tokens():
        raise ValueError(f"cannot script {sentence!r} after {trigger!r} (clash: {clash})")
    return extra


def _write_gguf(
    path: Path,
    *,
    arch: str,
    sentence: str,
    chat_template: str | None,
    name: str,
    reply: tuple[str, str] | None = None,
) -> Path:
    pieces = sentence_pieces(sentence)
    n_out = len(pieces)
    extra = _reply_pieces(reply, pieces)

    tokens = _fixed_tokens()
    types: list[int] = [
        gguf.TokenType.UNKNOWN,
        *[gguf.TokenType.CONTROL] * 4,
        *[gguf.TokenType.BYTE] * 256,
        # A prompt space becomes "▁"; without this token it would cost 3 byte tokens,
        # and gpt4all sizes its token buffer as len(text) + 4 (overflow = abort).
        gguf.TokenType.NORMAL,
    ]
    first_out = len(tokens)
    tokens += pieces
    types += [gguf.TokenType.NORMAL] * n_out
    if reply is not None:  # the trigger (a control token), then the second answer's pieces
        tokens += [reply[0], *extra]
        types += [gguf.TokenType.CONTROL, *[gguf.TokenType.NORMAL] * len(extra)]
    scores = [0.0] * len(tokens)
    n_vocab = len(tokens)
    eos_id = tokens.index(EOS)

    # Feature 0 marks "any other token"; feature i marks output piece o_i; with a reply,
    # feature n_out + 1 marks the trigger and the next ones the reply's pieces.
    n_feat = n_out + 1 + (len(extra) + 1 if reply is not None else 0)
    n_embd = max(32, -(-n_feat // 32) * 32)
    embd = np.zeros((n_vocab, n_embd), dtype=np.float32)
    embd[:, 0] = 1.0
    for i in range(n_out + (len(extra) + 1 if reply is not None else 0)):
        embd[first_out + i, 0] = 0.0
        embd[first_out + i, i + 1] = 1.0
    # RMS norm turns a one-hot row into sqrt(n_embd) at its position.
    gain = _LOGIT_GAP / np.sqrt(n_embd)
    out = np.zeros((n_vocab, n_embd), dtype=np.float32)
    for i in range(n_out):
        out[first_out + i, i] = gain  # previous feature i (0 = anything else) -> o_{i+1}
    out[eos_id, n_out] = gain  # last piece (or anything, for an empty sentence) -> EOS
    if reply is not None:
        first_extra = first_out + n_out + 1
        for j in range(len(extra)):  # trigger -> q_1, q_j -> q_{j+1}
            out[first_extra + j, n_out + 1 + j] = gain
        out[eos_id, n_out + 1 + len(extra)] = gain  # last reply piece -> EOS

    writer = gguf.GGUFWriter(path, arch=arch)
    writer.add_name(name)
    writer.add_description("Synthetic test model: always answers with a fixed sentence.")
    writer.add_context_length(_N_CTX)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(1)
    writer.add_feed_forward_length(_N_FF)
    writer.add_head_count(_N_HEAD)
    writer.add_head_count_kv(_N_HEAD)
    writer.add_rope_dimension_count(n_embd // _N_HEAD)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_file_type(int(gguf.LlamaFileType.ALL_F32))

    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types([int(t) for t in types])
    writer.add_unk_token_id(tokens.index(UNK))
    writer.add_bos_token_id(tokens.index(BOS))
    writer.add_eos_token_id(eos_id)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    if chat_template is not None:
        writer.add_chat_template(chat_template)

    zeros = np.zeros
    writer.add_tensor("token_embd.weight", embd)
    writer.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    writer.add_tensor("output.weight", out)
    writer.add_tensor("blk.0.attn_norm.weight", np.ones(n_embd, dtype=np.float32))
    for proj in ("attn_q", "attn_k", "attn_v", "attn_output"):
        writer.add_tensor(f"blk.0.{proj}.weight", zeros((n_embd, n_embd), dtype=np.float32))
    writer.add_tensor("blk.0.ffn_norm.weight", np.ones(n_embd, dtype=np.float32))
    writer.add_tensor("blk.0.ffn_gate.weight", zeros((_N_FF, n_embd), dtype=np.float32))
    writer.add_tensor("blk.0.ffn_up.weight", zeros((_N_FF, n_embd), dtype=np.float32))
    writer.add_tensor("blk.0.ffn_down.weight", zeros((n_embd, _N_FF), dtype=np.float32))

    path.parent.mkdir(parents=True, exist_ok=True)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def build_tiny_model(
    path: Path,
    sentence: str = DEFAULT_SENTENCE,
    chat_template: str | None = CHATML_TEMPLATE,
) -> Path:
    """Write a tiny llama GGUF at ``path`` that always answers ``sentence`` then EOS.

    With temperature 0 (and, in practice, any sampling settings) gpt4all's
    ``generate`` returns exactly ``sentence``; ``max_tokens=n`` returns the first
    ``n`` pieces of :func:`sentence_pieces`. An empty sentence gives a model that
    answers nothing (EOS at once). Pass ``chat_template=None`` to omit
    ``tokenizer.chat_template``.
    """
    return _write_gguf(
        Path(path),
        arch="llama",
        sentence=sentence,
        chat_template=chat_template,
        name=TINY_MODEL_NAME,
    )


def build_broken_models(directory: Path) -> dict[str, Path]:
    """Write model files that must fail to load, for error-path tests.

    Keys: ``truncated`` (a valid tiny GGUF cut in half), ``not_gguf`` (text with a
    ``.gguf`` name), ``unknown_arch`` (a complete GGUF for architecture ``gemma3``,
    which gpt4all 2.8.2 does not support).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)

    truncated = build_tiny_model(directory / "truncated.gguf")
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])

    not_gguf = directory / "not-gguf.gguf"
    not_gguf.write_text("this is not a model file\n" * 40, encoding="utf-8")

    unknown_arch = _write_gguf(
        directory / "unknown-arch.gguf",
        arch="gemma3",
        sentence=DEFAULT_SENTENCE,
        chat_template=CHATML_TEMPLATE,
        name="unknown-arch-test-model",
    )
    return {"truncated": truncated, "not_gguf": not_gguf, "unknown_arch": unknown_arch}


#: A Qwen-2.5-style tool-aware template (it reads ``tools``; calls are ``<tool_call>``
#: blocks, results ``<tool_response>`` user turns), small enough for the tiny context.
TOOL_CHAT_TEMPLATE = (
    "{% if tools %}<|im_start|>system\n"
    "{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] }}\n{% endif %}"
    "<tools>{% for tool in tools %}{{ tool['function']['name'] }};{% endfor %}</tools>"
    "<|im_end|>\n{% endif %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' and tools %}"
    "{% elif message['role'] == 'tool' %}"
    "{{ '<|im_start|>user\n<tool_response>' + message['content'] }}"
    "{{ '</tool_response><|im_end|>\n' }}"
    "{% elif message['tool_calls'] %}<|im_start|>assistant\n"
    "{% for call in message['tool_calls'] %}"
    "<tool_call>{{ {'name': call['function']['name'], 'arguments': call['function']['arguments']}"
    " | tojson }}</tool_call>{% endfor %}<|im_end|>\n"
    "{% else %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
    "{% if messages[-1]['role'] == 'tool' %}<|after_tool|>{% endif %}{% endif %}"
)
TOOL_CALL_SENTENCE = (
    'Checking. <tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'
)
#: The control token :data:`TOOL_CHAT_TEMPLATE` ends its prompt with after a tool result.
AFTER_TOOL = "<|after_tool|>"
#: What the tool model answers after a tool result (with :data:`TOOL_CHAT_TEMPLATE`).
TOOL_ANSWER_SENTENCE = "The weather in Paris is sunny, 21 degrees."


def build_tool_model(path: Path, chat_template: str | None = TOOL_CHAT_TEMPLATE) -> Path:
    """A tiny model whose answer is a text lead-in and one Hermes-format tool call, and,
    when the prompt ends with :data:`AFTER_TOOL` (the tool template's generation prompt
    after a tool result), the plain sentence :data:`TOOL_ANSWER_SENTENCE`: a whole
    agent round trip (call, result, answer)."""
    return _write_gguf(
        Path(path),
        arch="llama",
        sentence=TOOL_CALL_SENTENCE,
        chat_template=chat_template,
        name=TINY_MODEL_NAME,
        reply=(AFTER_TOOL, TOOL_ANSWER_SENTENCE),
    )
