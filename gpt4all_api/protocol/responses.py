"""``/v1/responses`` wire types (OpenAI's Responses API) and the checks a schema cannot make.

Requests accept what OpenAI's ``CreateResponse`` accepts, so current clients parse; the
parts this server cannot honour (built-in tools, reasoning, background runs, images and
files, ...) are parsed into catch-all types and refused by ``validate_request`` with a 400
naming the parameter. Response types follow OpenAI's ``Response`` schema field for field.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    SerializerFunctionWrapHandler,
    Tag,
    field_validator,
    model_serializer,
)

from gpt4all_api.errors import InvalidRequest
from gpt4all_api.protocol.common import REQUEST_CONFIG
from gpt4all_api.protocol.strings import TextChecked

ItemStatus = Literal["in_progress", "completed", "incomplete"]

#: OpenAI's limits for ``metadata``.
METADATA_MAX_KEYS = 16
METADATA_MAX_KEY_LENGTH = 64
METADATA_MAX_VALUE_LENGTH = 512

_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def _kind(value: Any, known: tuple[str, ...], default: str | None = None) -> str:
    """Tag of a ``type``-discriminated union member: ``(type)`` if known, else ``(other)``.

    Unknown types parse into a catch-all so ``validate_request`` can refuse them by name
    instead of pydantic listing every union member. Tags are parenthesised because pydantic
    puts them in error locations and ``errors`` leaves such parts out of the ``param`` it
    names (``input[0].content``, not ``input[0].message.content``).
    """
    kind = value.get("type", default) if isinstance(value, dict) else getattr(value, "type", None)
    if kind is None and default is not None:
        kind = default
    return f"({kind})" if kind in known else "(other)"


# --- input content parts ------------------------------------------------------------------


class InputTextPart(BaseModel):
    model_config = REQUEST_CONFIG

    type: Literal["input_text"]
    text: str


class OutputTextPart(BaseModel):
    """Text an assistant said earlier (a previous response's output fed back as input)."""

    model_config = REQUEST_CONFIG

    type: Literal["output_text"]
    text: str
    annotations: list[Any] | None = None


class RefusalPart(BaseModel):
    model_config = REQUEST_CONFIG

    type: Literal["refusal"]
    refusal: str


class OtherPart(BaseModel):
    """``input_image``, ``input_file``, ``input_audio``...: parsed so they can be refused."""

    model_config = REQUEST_CONFIG

    type: str


_PART_TYPES = ("input_text", "output_text", "refusal")

ContentPart = Annotated[
    Annotated[InputTextPart, Tag("(input_text)")]
    | Annotated[OutputTextPart, Tag("(output_text)")]
    | Annotated[RefusalPart, Tag("(refusal)")]
    | Annotated[OtherPart, Tag("(other)")],
    Discriminator(lambda v: _kind(v, _PART_TYPES)),
]


# --- input items --------------------------------------------------------------------------


class MessageItem(BaseModel):
    """A message (``type`` may be left out, as in OpenAI's ``EasyInputMessage``)."""

    model_config = REQUEST_CONFIG

    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[ContentPart]
    id: str | None = None
    status: ItemStatus | None = None


class FunctionCallItem(BaseModel):
    """A function call the model made earlier, fed back with its output."""

    model_config = REQUEST_CONFIG

    type: Literal["function_call"]
    call_id: str = Field(min_length=1, max_length=256)
    name: str = Field(min_length=1, max_length=128)
    arguments: str
    id: str | None = None
    status: ItemStatus | None = None


class FunctionCallOutputItem(BaseModel):
    """The result of a function call, for the model to continue from."""

    model_config = REQUEST_CONFIG

    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1, max_length=256)
    output: str | list[ContentPart]
    id: str | None = None
    status: ItemStatus | None = None


class OtherItem(BaseModel):
    """``item_reference``, ``reasoning``, built-in tool calls...: parsed to be refused."""

    model_config = REQUEST_CONFIG

    type: str


_ITEM_TYPES = ("message", "function_call", "function_call_output")

InputItem = Annotated[
    Annotated[MessageItem, Tag("(message)")]
    | Annotated[FunctionCallItem, Tag("(function_call)")]
    | Annotated[FunctionCallOutputItem, Tag("(function_call_output)")]
    | Annotated[OtherItem, Tag("(other)")],
    Discriminator(lambda v: _kind(v, _ITEM_TYPES, default="message")),
]


# --- tools, tool choice, text format --------------------------------------------------------


class FunctionTool(BaseModel):
    model_config = REQUEST_CONFIG

    type: Literal["function"]
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class OtherTool(BaseModel):
    """``web_search``, ``file_search``, ``computer_use_preview``, ``mcp``...: refused."""

    model_config = REQUEST_CONFIG

    type: str


Tool = Annotated[
    Annotated[FunctionTool, Tag("(function)")] | Annotated[OtherTool, Tag("(other)")],
    Discriminator(lambda v: _kind(v, ("function",))),
]


class ToolChoiceFunction(BaseModel):
    model_config = REQUEST_CONFIG

    type: Literal["function"]
    name: str = Field(min_length=1)


class ToolChoiceOther(BaseModel):
    """``allowed_tools``, built-in tool types, ``mcp``, ``custom``: refused."""

    model_config = REQUEST_CONFIG

    type: str


def _tool_choice_kind(value: Any) -> str:
    if isinstance(value, str):
        return "(options)"
    return _kind(value, ("function",))


ToolChoice = Annotated[
    Annotated[Literal["none", "auto", "required"], Tag("(options)")]
    | Annotated[ToolChoiceFunction, Tag("(function)")]
    | Annotated[ToolChoiceOther, Tag("(other)")],
    Discriminator(_tool_choice_kind),
]


class FormatText(BaseModel):
    model_config = REQUEST_CONFIG

    type: Literal["text"]


class FormatJsonObject(BaseModel):
    model_config = REQUEST_CONFIG

    type: Literal["json_object"]


class FormatJsonSchema(BaseModel):
    model_config = REQUEST_CONFIG

    type: Literal["json_schema"]
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    schema_: dict[str, Any] = Field(alias="schema")
    strict: bool | None = None


class FormatOther(BaseModel):
    """Any other ``text.format`` type: refused by ``validate_request``."""

    model_config = REQUEST_CONFIG

    type: str


TextFormat = Annotated[
    Annotated[FormatText, Tag("(text)")]
    | Annotated[FormatJsonObject, Tag("(json_object)")]
    | Annotated[FormatJsonSchema, Tag("(json_schema)")]
    | Annotated[FormatOther, Tag("(other)")],
    Discriminator(lambda v: _kind(v, ("text", "json_object", "json_schema"))),
]


class TextConfig(BaseModel):
    model_config = REQUEST_CONFIG

    format: TextFormat = Field(default_factory=lambda: FormatText(type="text"))
    verbosity: Literal["low", "medium", "high"] | None = None


# --- the request ----------------------------------------------------------------------------


class CreateResponseRequest(TextChecked):
    """``POST /v1/responses``, fields in the order of OpenAI's reference."""

    model_config = REQUEST_CONFIG

    background: bool | None = Field(None, description="Not supported: must be false.")
    conversation: str | dict[str, Any] | None = Field(
        None, description="Not supported: use `previous_response_id`."
    )
    include: list[str] | None = Field(None, description="Not supported: must be empty.")
    input: str | list[InputItem] = Field(
        description="Text, or a list of messages, function calls and function call outputs."
    )
    instructions: str | None = Field(
        None, description="A system (developer) message; not carried over to continuations."
    )
    max_output_tokens: int | None = Field(None, ge=1)
    max_tool_calls: int | None = Field(
        None, ge=1, description="Accepted; applies to built-in tools, which are not served."
    )
    metadata: dict[str, str] | None = Field(
        None, description="Up to 16 key/value pairs (keys 64, values 512 characters)."
    )
    model: str = Field(min_length=1, max_length=512)
    parallel_tool_calls: bool | None = None
    previous_response_id: str | None = Field(
        None, min_length=1, max_length=256, description="Continue a stored response."
    )
    prompt: dict[str, Any] | None = Field(None, description="Not supported (prompt templates).")
    prompt_cache_key: str | None = Field(
        None, description="Accepted; a load balancer in front of replicas routes by it."
    )
    reasoning: dict[str, Any] | None = Field(None, description="Not supported.")
    safety_identifier: str | None = Field(None, max_length=64, description="Accepted, ignored.")
    service_tier: str | None = Field(None, description="Accepted and ignored.")
    store: bool | None = Field(True, description="Keep the response for retrieval (default).")
    stream: bool | None = False
    stream_options: dict[str, Any] | None = None
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    text: TextConfig | None = None
    tool_choice: ToolChoice | None = None
    tools: list[Tool] | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20, description="Not supported beyond 0.")
    top_p: float | None = Field(None, ge=0.0, le=1.0)
    truncation: Literal["auto", "disabled"] | None = Field(
        None, description="`disabled` (default): an input over the context is a 400."
    )
    user: str | None = Field(None, description="Accepted and echoed.")

    @field_validator("metadata")
    @classmethod
    def _check_metadata(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        if v is None:
            return None
        if len(v) > METADATA_MAX_KEYS:
            raise ValueError(f"at most {METADATA_MAX_KEYS} key/value pairs are allowed")
        for key, value in v.items():
            if len(key) > METADATA_MAX_KEY_LENGTH:
                raise ValueError(f"keys must be at most {METADATA_MAX_KEY_LENGTH} characters")
            if len(value) > METADATA_MAX_VALUE_LENGTH:
                raise ValueError(
                    f"values must be at most {METADATA_MAX_VALUE_LENGTH} characters (key {key!r})"
                )
        return v

    def function_tools(self) -> list[FunctionTool]:
        """The request's tools (all functions once ``validate_request`` passed)."""
        return [t for t in self.tools or [] if isinstance(t, FunctionTool)]

    def text_format(self) -> FormatText | FormatJsonObject | FormatJsonSchema | FormatOther:
        return self.text.format if self.text is not None else FormatText(type="text")


def _unsupported(param: str, what: str) -> InvalidRequest:
    return InvalidRequest(f"{what} is not supported by this server.", param=param)


def validate_request(request: CreateResponseRequest) -> None:
    """Refuse what this server cannot honour, with a 400 naming the parameter.

    Checks that need the stored history (matching call ids) are the translation's; a
    ``text.format`` schema is checked with the chat request it becomes.
    """
    if request.background:
        raise _unsupported("background", "'background': true (background responses)")
    if request.conversation is not None:
        raise _unsupported("conversation", "'conversation' (use 'previous_response_id')")
    if request.include:
        raise _unsupported("include", f"'include' ({', '.join(request.include)})")
    if request.prompt is not None:
        raise _unsupported("prompt", "'prompt' (stored prompt templates)")
    if request.reasoning and any(
        request.reasoning.get(k) not in (None, "none") for k in ("effort", "summary", "mode")
    ):
        raise _unsupported("reasoning", "'reasoning' (the served models have no reasoning)")
    if request.top_logprobs:
        raise _unsupported("top_logprobs", "'top_logprobs'")
    if request.truncation == "auto":
        raise _unsupported("truncation", "'truncation': 'auto'")
    _check_input(request.input)
    _check_tools(request)
    fmt = request.text_format()
    if isinstance(fmt, FormatOther):
        raise InvalidRequest(
            f"'text.format' of type '{fmt.type}' is not supported: use 'text', 'json_object' "
            "or 'json_schema'.",
            param="text.format.type",
        )
    if isinstance(fmt, FormatJsonSchema) and not _NAME.match(fmt.name):
        raise InvalidRequest(
            "'text.format.name' may only contain a-z, A-Z, 0-9, '_' and '-'.",
            param="text.format.name",
        )


def _check_parts(parts: list[Any], param: str, allowed: tuple[str, ...]) -> None:
    for j, part in enumerate(parts):
        if part.type not in allowed:
            shown = " or ".join(f"'{a}'" for a in allowed)
            kind = "non-text content" if isinstance(part, OtherPart) else "this content"
            raise InvalidRequest(
                f"Content of type '{part.type}' is not supported here ({kind}): use {shown}.",
                param=f"{param}[{j}]",
            )


def _check_input(items: str | list[Any]) -> None:
    if isinstance(items, str):
        return
    if not items:
        raise InvalidRequest("'input' must not be an empty list.", param="input")
    for i, item in enumerate(items):
        param = f"input[{i}]"
        if isinstance(item, OtherItem):
            raise InvalidRequest(
                f"Input items of type '{item.type}' are not supported by this server: use "
                "messages, 'function_call' and 'function_call_output' items.",
                param=f"{param}.type",
            )
        if isinstance(item, MessageItem) and isinstance(item.content, list):
            allowed = (
                ("output_text", "input_text", "refusal")
                if item.role == "assistant"
                else ("input_text",)
            )
            _check_parts(item.content, f"{param}.content", allowed)
        if isinstance(item, FunctionCallOutputItem) and isinstance(item.output, list):
            _check_parts(item.output, f"{param}.output", ("input_text",))


def _check_tools(request: CreateResponseRequest) -> None:
    names: set[str] = set()
    for i, tool in enumerate(request.tools or []):
        if isinstance(tool, OtherTool):
            raise InvalidRequest(
                f"Tools of type '{tool.type}' are not supported by this server: only "
                "'function' tools are.",
                param=f"tools[{i}].type",
            )
        if not _NAME.match(tool.name):
            raise InvalidRequest(
                "Function names may only contain a-z, A-Z, 0-9, '_' and '-' (at most 64).",
                param=f"tools[{i}].name",
            )
        if tool.name in names:
            raise InvalidRequest(
                f"Duplicate function name '{tool.name}'.", param=f"tools[{i}].name"
            )
        names.add(tool.name)
        params = tool.parameters
        if params is not None and params and params.get("type", "object") != "object":
            raise InvalidRequest(
                "A function's 'parameters' must be a JSON schema of type 'object'.",
                param=f"tools[{i}].parameters",
            )
    choice = request.tool_choice
    if isinstance(choice, ToolChoiceOther):
        raise InvalidRequest(
            f"'tool_choice' of type '{choice.type}' is not supported: use 'none', 'auto', "
            "'required' or {'type': 'function', 'name': ...}.",
            param="tool_choice",
        )
    if isinstance(choice, ToolChoiceFunction) and choice.name not in names:
        raise InvalidRequest(
            f"'tool_choice' names the function '{choice.name}', which is not in 'tools'.",
            param="tool_choice",
        )
    if choice == "required" and not names:
        raise InvalidRequest(
            "'tool_choice' is 'required' but no tools were given.", param="tool_choice"
        )


# --- the response -----------------------------------------------------------------------------

RESPONSE_CONFIG = ConfigDict(populate_by_name=True)


class OutputText(BaseModel):
    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[Any] = Field(default_factory=list)
    logprobs: list[Any] = Field(default_factory=list)


class OutputMessage(BaseModel):
    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    content: list[OutputText]
    status: ItemStatus


class OutputFunctionCall(BaseModel):
    id: str
    type: Literal["function_call"] = "function_call"
    call_id: str
    name: str
    arguments: str
    status: ItemStatus


OutputItem = Annotated[OutputMessage | OutputFunctionCall, Field(discriminator="type")]


class InputTokensDetails(BaseModel):
    cached_tokens: int = 0
    cache_write_tokens: int = 0


class OutputTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class ResponseUsage(BaseModel):
    input_tokens: int
    input_tokens_details: InputTokensDetails = Field(default_factory=InputTokensDetails)
    output_tokens: int
    output_tokens_details: OutputTokensDetails = Field(default_factory=OutputTokensDetails)
    total_tokens: int


class IncompleteDetails(BaseModel):
    reason: Literal["max_output_tokens", "content_filter"]


ResponseErrorCode = Literal["server_error", "rate_limit_exceeded", "invalid_prompt"]


class ResponseError(BaseModel):
    code: ResponseErrorCode
    message: str


class EchoedFunctionTool(BaseModel):
    type: Literal["function"] = "function"
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None
    strict: bool | None


class EchoedTextConfig(BaseModel):
    model_config = RESPONSE_CONFIG

    format: dict[str, Any] = Field(default_factory=lambda: {"type": "text"})


ResponseStatus = Literal["completed", "failed", "in_progress", "cancelled", "queued", "incomplete"]


class Response(BaseModel):
    """OpenAI's ``Response`` object; ``to_json`` gives the wire form."""

    id: str
    object: Literal["response"] = "response"
    created_at: int
    status: ResponseStatus
    completed_at: int | None = None
    error: ResponseError | None = None
    incomplete_details: IncompleteDetails | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    model: str
    output: list[OutputItem] = Field(default_factory=list)
    parallel_tool_calls: bool = True
    previous_response_id: str | None = None
    reasoning: None = None
    store: bool = True
    temperature: float | None = None
    text: EchoedTextConfig = Field(default_factory=EchoedTextConfig)
    tool_choice: str | dict[str, Any] = "auto"
    tools: list[EchoedFunctionTool] = Field(default_factory=list)
    top_p: float | None = None
    truncation: Literal["auto", "disabled"] = "disabled"
    usage: ResponseUsage | None = None
    user: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)

    @model_serializer(mode="wrap")
    def _drop_unset(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # The schema does not let ``user`` and ``usage`` be null (``usage`` is unknown until
        # the end of a stream): leave them out while unset.
        data = handler(self)
        for key in ("user", "usage"):
            if data.get(key) is None:
                data.pop(key, None)
        return data

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class ResponseItemList(BaseModel):
    """A page of ``GET /v1/responses/{id}/input_items``."""

    object: Literal["list"] = "list"
    data: list[dict[str, Any]]
    first_id: str
    last_id: str
    has_more: bool


class DeletedResponse(BaseModel):
    """What ``DELETE /v1/responses/{id}`` answers."""

    id: str
    object: Literal["response"] = "response"
    deleted: Literal[True] = True
