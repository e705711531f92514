"""Lone surrogates: refused in every request, scrubbed from what was stored before.

JSON can carry a lone UTF-16 surrogate (``"\\ud800"``); Python decodes it into a ``str``
that cannot be encoded as UTF-8, so it fails wherever text leaves the process: the model's
tokenizer, the database, the JSON answer (a 500, or a stored row that answers 500 on every
read). ``TextChecked`` request models refuse such a string anywhere in the body, once, as
the body is parsed: a 400 naming the parameter (its path in the JSON the client sent),
before anything is generated or stored. ``scrub`` makes data stored before this check
readable (each lone surrogate becomes U+FFFD).
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, model_validator

from gpt4all_api.errors import InvalidRequest

_SURROGATE = re.compile("[\ud800-\udfff]")
_SCALARS = (int, float, type(None))


def _valid(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def lone_surrogate_at(value: Any, path: str = "") -> str | None:
    """The path (``messages[1].tool_calls[0].function.name``) of the first string in
    ``value`` that holds a lone surrogate (for a dict key: the dict's path; ``""``: the
    value itself), or None. Walks JSON values and pydantic models (by wire names)."""
    if isinstance(value, str):
        return None if _valid(value) else path
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and not _valid(key):
                return path  # the key is the problem: name the object that holds it
            found = lone_surrogate_at(item, _join(path, str(key)))
            if found is not None:
                return found
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            if isinstance(item, _SCALARS):
                continue  # token arrays: no call per number
            found = lone_surrogate_at(item, _join(path, i))
            if found is not None:
                return found
    elif isinstance(value, BaseModel):
        for name, field in type(value).model_fields.items():
            found = lone_surrogate_at(getattr(value, name), _join(path, field.alias or name))
            if found is not None:
                return found
    return None


def check_text(value: Any, path: str = "") -> None:
    """A 400 naming the first string of ``value`` that is not valid Unicode."""
    where = lone_surrogate_at(value, path)
    if where is not None:
        shown = f"'{where}'" if where else "the request body"
        raise InvalidRequest(
            f"Invalid value for {shown}: not valid Unicode (it holds a lone surrogate).",
            param=where or None,
        )


class TextChecked(BaseModel):
    """Base of the request bodies: every string in the body, wherever it is (also in
    free-form objects such as ``metadata`` or a tool's ``parameters``), must be valid
    Unicode. Raises ``InvalidRequest`` (not a validation error) so the 400 names the
    exact path rather than pydantic's location of a union member."""

    @model_validator(mode="before")
    @classmethod
    def _check_text(cls, data: Any) -> Any:
        check_text(data)
        return data


def scrub(value: Any) -> Any:
    """``value`` with every lone surrogate replaced by U+FFFD (keys included); the same
    object when there is none, so reads of clean data copy nothing."""
    return value if lone_surrogate_at(value) is None else _scrubbed(value)


def _scrubbed(value: Any) -> Any:
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_scrubbed(k): _scrubbed(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrubbed(v) for v in value]
    return value
