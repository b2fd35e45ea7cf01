"""The record side of looplm.hf.chat.to_messages, kept apart (chat.py is near its size limit): its arguments' types,
LLaMA-Factory's Alpaca `system` and `history` columns, and OpenAI's content parts."""

from __future__ import annotations

import json
from typing import Any

from ..records import check_text


def check_arguments(fmt: Any, messages_field: Any, prompt_field: Any, response_field: Any,
                    system_prompt: Any) -> None:
    """What ChatDataConfig checks, from Python: a field name of None read every record as "nothing to learn", a
    system_prompt of 5 became a turn's content, and equal fields trained the model to copy its prompt."""
    for name, v in (("fmt", fmt), ("messages_field", messages_field), ("prompt_field", prompt_field),
                    ("response_field", response_field)):
        if not isinstance(v, str):
            raise TypeError(f"{name} must be a str, got {type(v).__name__} {repr(v)[:80]}")
    if system_prompt is not None and not isinstance(system_prompt, str):
        raise TypeError(f"system_prompt must be a str or None, got {type(system_prompt).__name__} "
                        f"{repr(system_prompt)[:80]}")
    if fmt != "messages" and prompt_field == response_field:
        raise ValueError(f"response_field must differ from prompt_field (both {prompt_field!r}): the model would "
                         "learn to copy its prompt")


def _system_column(record: dict[str, Any]) -> str | None:
    """A record's top-level `system` (LLaMA-Factory's column; the Anthropic Messages API's system prompt): a
    non-blank string, or None; any other value is refused (null and "" are none)."""
    system = record.get("system")
    if system is not None and not isinstance(system, str):
        raise ValueError(f"system must be a string (LLaMA-Factory's system prompt, the conversation's first turn), "
                         f"got {type(system).__name__} {json.dumps(system)[:80]}; write it as text, or remove the "
                         "field if it is something else")
    return system if system and system.strip() else None


def system_turn(record: dict[str, Any], msgs: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The system turn a `messages` record's top-level `system` gives (the Anthropic Messages API's shape, and
    LLaMA-Factory's sharegpt datasets), as for an Alpaca record: it was dropped without a word. None when the
    messages hold the same system turn; refused beside a different one (which of the two is meant is no guess)."""
    system = _system_column(record)
    if system is None:
        return []
    own = next((m["content"] for m in msgs if m.get("role") in ("system", "developer")), None)
    if own is None:
        return [{"role": "system", "content": system}]
    if own != system:
        raise ValueError(f"the record has a top-level system ({system[:40]!r}) and a different system turn in its "
                         f"messages ({own[:40]!r}); keep one of them")
    return []


def earlier_turns(record: dict[str, Any]) -> list[dict[str, str]]:
    """The turns LLaMA-Factory's Alpaca format puts before a record's instruction: its `system` prompt and its
    `history` of [user, assistant] pairs (all trained on, as LLaMA-Factory does by default). Read by its fields
    alone, such a record lost them without a word. A `system` that is no string (5) or a `history` that is no list
    (a transcript as one string) was dropped without a word too: both are refused (null and "" are none)."""
    system, history = _system_column(record), record.get("history")
    out = [{"role": "system", "content": system}] if system else []
    if history is None or history == "":
        return out
    if not isinstance(history, list):
        raise ValueError(f"history must be a list of [user, assistant] pairs of strings (LLaMA-Factory's earlier "
                         f"turns), got {type(history).__name__} {json.dumps(history)[:80]}; write the earlier turns "
                         "as such pairs (or the record as a 'messages' list), or remove the field if it is "
                         "something else")
    for k, pair in enumerate(history):
        if not (isinstance(pair, list | tuple) and len(pair) == 2 and all(isinstance(t, str) for t in pair)):
            raise ValueError(f"history[{k}] must be a [user, assistant] pair of strings (LLaMA-Factory's earlier "
                             f"turns), got {json.dumps(pair)[:80]}; write such records as a 'messages' list")
        out += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
    check_text(out, "history")
    return out


# OpenAI's text parts: Chat Completions' `text`, the Responses API's `input_text` (user, system) and `output_text`
# (assistant), which exports of its logs hold (refused as "no text part" before)
TEXT_PARTS = ("text", "input_text", "output_text")


def _part_text(part: dict[str, Any]) -> str | None:
    """A text part's string: its `text`, or the Assistants API's (v2 thread exports) {"value": ..., "annotations":
    [...]} object's `value` (refused as "no text part" before); None for a part of another kind."""
    text = part.get("text")
    if isinstance(text, dict) and part.get("type") == "text":
        text = text.get("value")
    return text if part.get("type") in TEXT_PARTS and isinstance(text, str) else None


def joined_parts(m: Any, where: str) -> Any:
    """A message whose `content` is OpenAI's list of parts ([{"type": "text", "text": ...}], newer exports) with its
    text parts (TEXT_PARTS) joined as templates write them (one after another); a part of another type (an image)
    is refused."""
    parts = m.get("content") if isinstance(m, dict) else None
    if not (isinstance(parts, list) and parts and all(isinstance(p, dict) for p in parts)):
        return m
    other = next((p for p in parts if _part_text(p) is None), None)
    if other is not None:
        kind = (f"a {other['type']} part whose text is no string" if other.get("type") in TEXT_PARTS else
                "one that is no text part")
        raise ValueError(f"{where}.content is a list of parts with {kind} ({json.dumps(other)[:80]}); looplm trains "
                         "on text: write the content as one string")
    return {**m, "content": "".join(_part_text(p) for p in parts)}
