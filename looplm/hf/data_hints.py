"""What to check when records give no conversation (finetune's and analyze's hints): which fields, format or
shape would read them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .chat import ROLES, has_messages

# (prompt, response) field pairs that analyze tries in order when a record has no `messages` list (finetune names the
# one its records have when its own fields find nothing). Alpaca's records are instruction / input / output: the
# prompt is the instruction and its (often empty) input (records.alpaca_prompt, for finetune and analyze alike), never
# the input alone (read as input -> output, the instruction was dropped, and a record with no input skipped as
# having no reply).
FIELD_PAIRS = (("problem", "solution"), ("question", "answer"), ("prompt", "response"), ("instruction", "output"),
               ("input", "output"))


def field_hint(records: list[dict[str, Any]], fmt: dict[str, Any]) -> str:
    """What to check when no record gave a conversation: assistant turns that all have weight 0, or the field pair
    the first record has (GSM8K's question/answer under the default problem/solution), when the fields read were
    others."""
    hint = "check the records' shape and field names (finetune: data.format and data.*_field)"
    hints = []
    field = fmt.get("messages_field", "messages")
    if fmt.get("fmt", "auto") != "prompt_response":
        context = sum(_context_only(r.get(field)) for r in records if isinstance(r, dict))
        if context:  # (said as a field name to check, or a data.format analyze does not have)
            hints.append(f"{context} of them {'has' if context == 1 else 'have'} weight 0 on every assistant turn "
                         "(context, not a target): give the turns to learn weight 1")
        roles = sorted({m["role"] for r in records if isinstance(r, dict) and isinstance(r.get(field), list)
                        for m in r[field] if isinstance(m, dict) and isinstance(m.get("role"), str)})
        # the shape is right: the role names are another format's (a conversation of user turns alone is no such)
        if "assistant" not in roles and set(roles) - set(ROLES):
            hints.append(f"no turn has role assistant (roles: {', '.join(roles)})" + (
                "; ShareGPT's and Gemini's role names become user (human) and assistant (gpt, model)"
                if set(roles) & {"human", "gpt", "model"} else ""))
    turns = next((h for r in records if isinstance(r, dict) and (h := turns_hint(r, field))), None)
    if turns:
        hints.append(turns)
    # the first record read by the fields, not as a conversation: beside weight-0 conversations, the field names
    # that would read the others were not said
    first = next((r for r in records if isinstance(r, dict) and (
        fmt.get("fmt") == "prompt_response" or not has_messages(r, field))), None)
    if fmt.get("fmt", "auto") == "messages" or first is None:
        return "; ".join(hints) or hint
    read = (fmt.get("prompt_field", "problem"), fmt.get("response_field", "solution"))
    for p, r in FIELD_PAIRS:
        if (p, r) != read and p in first and r in first:
            hints.append(f"the records have {p}/{r} fields: set data.prompt_field={p} and data.response_field={r}")
            break
    else:  # no known pair (query/response, prompt/completion): the fields there are, which the settings can name
        text = [k for k, v in first.items() if isinstance(v, str)]
        if len(text) >= 2 and not (read[0] in first and read[1] in first):
            hints.append(f"the records' text fields are {', '.join(text[:6])}: set data.prompt_field and "
                         "data.response_field to the prompt's and the reply's")
    return "; ".join(hints) or hint


SHAREGPT_HINT = ("the records hold ShareGPT `conversations` (from/value turns): write each turn as role/content "
                 "(human: user, gpt: assistant) under `messages`")


def turns_hint(record: dict[str, Any], messages_field: str = "messages") -> str | None:
    """How to read a record whose conversation is under fields that are not read as one, or None: ShareGPT's
    from/value `conversations`, role/content turns under another name (`conversations`: data.messages_field reads
    it), TRL's conversational prompt/completion (two lists of turns), or plain `text` records. Each was told to
    rename its prompt's and reply's text fields, or only to check the records' shape."""
    if is_sharegpt(record.get("conversations")):
        return SHAREGPT_HINT
    lists = [k for k, v in record.items() if k != messages_field and _is_turns(v)]
    if len(lists) >= 2:
        return (f"the records' {' and '.join(lists[:2])} are lists of role/content turns (TRL's conversational "
                "prompt/completion), which looplm does not join: write each record's turns, in order, as one "
                "'messages' list")
    if lists:
        return (f"the records hold role/content turns under {lists[0]!r}, not {messages_field!r}: set "
                f"data.messages_field={lists[0]} (analyze reads 'messages': rename the field)")
    # continued-pretraining data ({"text": ...}): no prompt and reply to rename, which is what the hints said
    if isinstance(record.get("text"), str) and not any(p in record and r in record for p, r in FIELD_PAIRS):
        return ("the records are plain `text` (no prompt and reply): finetune and analyze read conversations (a "
                "'messages' list) or prompt/response fields, and have no plain-text mode; `looplm train` with "
                "data.task=text trains looplm's own model on plain text (a .txt file)")
    return None


def _is_turns(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(t, dict) and "role" in t for t in value)


def is_sharegpt(turns: Any) -> bool:
    return isinstance(turns, list) and any(isinstance(t, dict) and "from" in t and "value" in t for t in turns)


def _context_only(messages: Any) -> bool:
    """A conversation that has assistant turns, all of weight 0."""
    turns = [m for m in messages if isinstance(m, dict) and m.get("role") == "assistant"] if isinstance(
        messages, list) else []
    return bool(turns) and all(m.get("weight") == 0 for m in turns)


def folder_template(folder: Path) -> str:
    """What data.chat_template naming a folder should name instead: the folder's template file, its
    tokenizer_config.json's template, or neither (both were named for any folder, one without a template too)."""
    if (folder / "chat_template.jinja").is_file():
        return f"{folder} is a folder: give its template file ({folder / 'chat_template.jinja'})"
    try:
        config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = None
    if isinstance(config, dict) and config.get("chat_template"):
        return (f"{folder} is a folder whose tokenizer_config.json holds a chat_template: leave data.chat_template "
                "out if it is the model's own tokenizer, or copy that template to a .jinja file and give the file")
    return (f"{folder} is a folder that holds no chat template (no chat_template.jinja, no tokenizer_config.json "
            "with a chat_template): give a template file, chatml or a Jinja template")
