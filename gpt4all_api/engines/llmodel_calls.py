"""Raw ``llmodel_prompt`` calls on one gpt4all model context (worker thread only).

``prompt_call`` is the one place the C function is called; ``ContextTokens`` offers a
context to ``structured.decode`` as evaluate / sample / rewind.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any

from gpt4all_api.structured.decode import Cancelled, NoRoom


def prompt_call(
    lm: Any,
    data: bytes,
    special: bool,
    on_prompt: Callable[[int], bool],
    on_response: Callable[[int, bytes], bool],
    *,
    allow_shift: bool,
) -> None:
    """One ``llmodel_prompt`` call with raw callbacks: ``on_prompt`` fires per prompt token,
    ``on_response`` per generated token with its raw bytes (the bindings' own decoder hides
    tokens that end inside a UTF-8 sequence, which would break the token count).

    The template "%1%2" evaluates exactly ``data``: with one placeholder the backend would
    append "\\n\\n" after the reply (its default assistant suffix)."""
    from gpt4all._pyllmodel import PromptCallback, ResponseCallback, llmodel

    llmodel.llmodel_prompt(
        lm.model,
        data,
        b"%1%2",
        PromptCallback(on_prompt),
        ResponseCallback(on_response),
        allow_shift,
        lm.context,
        special,
        ctypes.c_char_p(),
    )


class ContextTokens:
    """One slot's context as ``structured.decode.TokenBackend``: no context shift (a
    shift would move the tokens a rollback returns to), control tokens by id."""

    def __init__(
        self,
        lm: Any,
        n_ctx: int,
        control_tokens: frozenset[int],
        cancelled: Callable[[], bool],
        before_call: Callable[[], None],
    ) -> None:
        self.lm = lm
        self.n_ctx = n_ctx
        self.control_tokens = control_tokens
        self.cancelled = cancelled
        self.before_call = before_call  # the slot's thread share, applied between calls
        self._prefix_tokens = 0

    @property
    def n_past(self) -> int:
        return int(self.lm.context.n_past)

    @property
    def room(self) -> int:
        return self.n_ctx - self.n_past

    def rewind(self, n_past: int) -> None:
        self.lm.context.n_past = n_past

    def evaluate(self, text: str | bytes, special: bool) -> int:
        """(``bytes``: a prompt segment as the engine keeps it.)"""
        data = text.encode() if isinstance(text, str) else text
        before = self.lm.context.n_past
        count, _, refused = self._call(data, special, self.n_ctx, None)
        if refused or (count == 0 and data):
            self.lm.context.n_past = before
            raise NoRoom()
        if self.cancelled():
            raise Cancelled()
        if self.lm.context.n_past != before + count:
            raise RuntimeError(f"context at {self.lm.context.n_past}, expected {before + count}")
        return count

    @property
    def prefix_tokens(self) -> int:
        return self._prefix_tokens

    def generate(
        self,
        limit: int,
        on_token: Callable[[int, bytes], bool],
        prefix: tuple[str, bool] | None = None,
    ) -> None:
        before = self.lm.context.n_past
        text, special = prefix if prefix is not None else ("", False)
        data = text.encode()
        count, generated, refused = self._call(data, special, limit, on_token)
        if data and self.cancelled() and generated == 0:
            raise Cancelled()
        if refused or count > limit or (data and count == 0):
            self.lm.context.n_past = before
            raise NoRoom()

    def _call(
        self,
        data: bytes,
        special: bool,
        limit: int,
        on_token: Callable[[int, bytes], bool] | None,
    ) -> tuple[int, int, bool]:
        """One backend call: evaluate ``data`` (stopping past ``limit`` tokens), then, with
        ``on_token``, sample while prompt and sampled tokens stay within ``limit``. Returns
        (prompt tokens, sampled tokens, refused: the backend found no room for ``data``);
        ``prefix_tokens`` follows the prompt count during the call."""
        self._prefix_tokens = 0
        generated = 0
        refused = False

        def on_prompt(_: int) -> bool:
            self._prefix_tokens += 1
            return self._prefix_tokens <= limit and not self.cancelled()

        def on_response(token_id: int, piece: bytes) -> bool:
            nonlocal generated, refused
            if token_id == -1:
                refused = True
                return False
            if on_token is None:
                return False
            generated += 1
            keep_going = on_token(token_id, piece)
            self.before_call()
            return keep_going and self._prefix_tokens + generated < limit

        self.lm.context.n_predict = limit if on_token is not None else 0
        self.before_call()
        prompt_call(self.lm, data, special, on_prompt, on_response, allow_shift=False)
        return self._prefix_tokens, generated, refused

    def is_special(self, token_id: int) -> bool:
        return token_id in self.control_tokens
