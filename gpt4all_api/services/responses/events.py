"""The streamed form of a response: deltas in, OpenAI's event sequence out.

Feed ``ResponseEvents`` what the generation yields (text fragments, the start of a function
call and its argument fragments, the finish) and it returns the events to send, in the
official order and shapes, numbered by ``sequence_number``:

    response.created, response.in_progress,
    per message:  output_item.added, content_part.added, output_text.delta...,
                  output_text.done, content_part.done, output_item.done
    per call:     output_item.added, function_call_arguments.delta...,
                  function_call_arguments.done, output_item.done
    response.completed | response.incomplete   (or error + response.failed)

``sse_frame`` writes one event as an SSE frame with ``event:`` and ``data:`` lines.
"""

from __future__ import annotations

from typing import Any

from gpt4all_api.protocol.responses import (
    OutputFunctionCall,
    OutputMessage,
    OutputText,
    Response,
    ResponseErrorCode,
)
from gpt4all_api.services.responses.build import (
    FinishReason,
    OutputItem,
    failed_response,
    finish_response,
)
from gpt4all_api.services.responses.translate import new_id
from gpt4all_api.services.sse import sse_event

Event = dict[str, Any]


def sse_frame(event: Event) -> bytes:
    """``event: <type>`` then ``data: <json>``, as OpenAI streams the Responses API."""
    return f"event: {event['type']}\n".encode() + sse_event(event)


class ResponseEvents:
    """Builds the event sequence of one streamed response (not thread-safe; one per stream)."""

    def __init__(self, response: Response) -> None:
        self._response = response
        self._seq = 0
        self._items: list[OutputItem] = []
        self._text: list[str] = []  # fragments of the open message
        self._args: list[str] = []  # fragments of the open call's arguments
        self._open: OutputItem | None = None
        self._started = False
        self._finished = False
        #: state before ``finish`` (sequence number, items, open item), for ``replace_finish``
        self._unsent: tuple[int, list[OutputItem], OutputItem | None] | None = None

    @property
    def response(self) -> Response:
        """The response as it stands (the final one after ``finish``/``fail``)."""
        return self._response

    @property
    def finished(self) -> bool:
        return self._finished

    def _event(self, kind: str, **fields: Any) -> Event:
        event = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        return event

    def _snapshot(self, kind: str) -> Event:
        return self._event(kind, response=self._response.to_json())

    def start(self) -> list[Event]:
        """``response.created`` and ``response.in_progress``."""
        if self._started:
            raise RuntimeError("the stream has already started")
        self._started = True
        return [self._snapshot("response.created"), self._snapshot("response.in_progress")]

    def _check_running(self) -> None:
        if not self._started or self._finished:
            raise RuntimeError("events only between start() and finish()/fail()")

    def text(self, delta: str) -> list[Event]:
        """A text fragment; opens the message item (and its text part) on the first one."""
        self._check_running()
        events: list[Event] = []
        if not isinstance(self._open, OutputMessage):
            events += self._close(incomplete=False)
            events += self._open_message()
        if delta:
            self._text.append(delta)
            events.append(self._text_event("response.output_text.delta", delta=delta))
        return events

    def tool_call(self, name: str, call_id: str | None = None) -> list[Event]:
        """A function call starts (closing the text before it)."""
        self._check_running()
        events = self._close(incomplete=False)
        item = OutputFunctionCall(
            id=new_id("fc"),
            call_id=call_id or new_id("call"),
            name=name,
            arguments="",
            status="in_progress",
        )
        self._open = item
        self._items.append(item)
        events.append(self._item_event("response.output_item.added", item))
        return events

    def tool_arguments(self, delta: str) -> list[Event]:
        """A fragment of the open function call's JSON arguments."""
        self._check_running()
        if not isinstance(self._open, OutputFunctionCall):
            raise RuntimeError("tool_arguments() without an open tool_call()")
        if not delta:
            return []
        self._args.append(delta)
        return [
            self._event(
                "response.function_call_arguments.delta",
                item_id=self._open.id,
                output_index=len(self._items) - 1,
                delta=delta,
            )
        ]

    def finish(
        self,
        finish_reason: FinishReason,
        *,
        input_tokens: int,
        output_tokens: int,
        cached_tokens: int = 0,
    ) -> list[Event]:
        """Close what is open and end with ``response.completed`` or ``response.incomplete``.

        A stream that produced nothing still has its (empty) message, as the non-streamed
        response does.
        """
        self._check_running()
        self._unsent = (self._seq, list(self._items), self._open)
        incomplete = finish_reason == "length"
        events: list[Event] = []
        if not self._items:
            events += self._open_message()
        events += self._close(incomplete=incomplete)
        self._finished = True
        self._response = finish_response(
            self._response,
            self._items,
            finish_reason=finish_reason,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cached_tokens=cached_tokens,
        )
        kind = "response.incomplete" if incomplete else "response.completed"
        events.append(self._snapshot(kind))
        return events

    def fail(
        self,
        message: str,
        *,
        code: ResponseErrorCode = "server_error",
        param: str | None = None,
        replace_finish: bool = False,
    ) -> list[Event]:
        """An error after the stream started: an ``error`` event, then ``response.failed``.

        ``replace_finish``: ``finish`` ran but its events were not sent (the finished
        response could not be stored); fail the response instead.
        """
        if self._finished and not replace_finish:
            return []
        if replace_finish and self._unsent is not None:
            # as if finish() had not run: its events were never sent
            self._seq, self._items, self._open = self._unsent
            self._unsent = None
        self._started = True
        self._finished = True
        error = self._event("error", code=code, message=message, param=param)
        done = [it for it in self._items if it is not self._open]
        self._response = failed_response(self._response, message, code, output=done)
        return [error, self._snapshot("response.failed")]

    # --- items ------------------------------------------------------------------------------

    def _item_event(self, kind: str, item: OutputItem) -> Event:
        return self._event(kind, output_index=len(self._items) - 1, item=item.model_dump())

    def _text_event(self, kind: str, **fields: Any) -> Event:
        assert self._open is not None
        return self._event(
            kind, item_id=self._open.id, output_index=len(self._items) - 1, content_index=0,
            logprobs=[], **fields,
        )  # fmt: skip

    def _part_event(self, kind: str, text: str) -> Event:
        assert self._open is not None
        part = OutputText(text=text).model_dump()
        return self._event(
            kind, item_id=self._open.id, output_index=len(self._items) - 1, content_index=0,
            part=part,
        )  # fmt: skip

    def _open_message(self) -> list[Event]:
        item = OutputMessage(id=new_id("msg"), content=[], status="in_progress")
        self._open = item
        self._items.append(item)
        self._text = []
        return [
            self._item_event("response.output_item.added", item),
            self._part_event("response.content_part.added", ""),
        ]

    def _close(self, *, incomplete: bool) -> list[Event]:
        item = self._open
        if item is None:
            return []
        status = "incomplete" if incomplete else "completed"
        events: list[Event] = []
        if isinstance(item, OutputMessage):
            text = "".join(self._text)
            events.append(self._text_event("response.output_text.done", text=text))
            events.append(self._part_event("response.content_part.done", text))
            done: OutputItem = item.model_copy(
                update={"content": [OutputText(text=text)], "status": status}
            )
        else:
            arguments = "".join(self._args)
            events.append(
                self._event(
                    "response.function_call_arguments.done",
                    item_id=item.id,
                    name=item.name,
                    output_index=len(self._items) - 1,
                    arguments=arguments,
                )
            )
            done = item.model_copy(update={"arguments": arguments, "status": status})
            self._args = []
        self._items[-1] = done
        events.append(self._item_event("response.output_item.done", done))
        self._open = None
        return events
