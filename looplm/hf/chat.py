"""Chat-template tokenization with a loss mask on assistant tokens only.

The mask is found in character space, then mapped to tokens through the tokenizer's offsets, so it is right
for any template that renders a conversation prefix-stably (rendering the first k messages gives a prefix of
rendering all of them), whatever special tokens it adds:

- for assistant turn i, the span starts where `template(messages[:i], add_generation_prompt=True)` ends (so
  the generation prompt, e.g. `<|im_start|>assistant\\n`, is context, not target) and ends where
  `template(messages[:i+1])` ends, minus trailing whitespace;
- so the target is the assistant's content plus the end-of-turn marker the template closes the turn with (e.g.
  `<|im_end|>`, which teaches the model to stop; all of its tokens), not the newline some templates put after it.
- an assistant turn with nothing in it (blank content and no other key the template renders, such as
  tool_calls) is context: its end marker alone would teach the model to end the turn at once (a conversation
  whose only assistant turns are empty has no target); a record's `tools` reach the template as `tools`;
- a token that straddles a span boundary is a target: with a generation prompt ending in a space
  ("Assistant: "), byte-level BPE merges that space with the first content character, and that merged token
  is the one the model has to produce.

Labels are aligned with `input_ids` (HF convention): `labels[j] = input_ids[j]` on target tokens and -100
elsewhere; the loss compares logits at j-1 with labels[j]. (A mask from token counts of a separately tokenized
prompt is off by the template's end-of-turn tokens; character spans are not.) It needs only a fast tokenizer.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from dataclasses import dataclass
from typing import Any

from ..records import alpaca_prompt, check_text
from ..tasks.base import IGNORE
from .chat_calls import call_problem, json_object, shown_value
from .chat_header import MARKER, header_why
from .chat_records import check_arguments, earlier_turns, joined_parts, system_turn
from .chat_stability import unstable_why

# ChatML, the format of Ouro's chat template: every turn is <|im_start|>role\ncontent<|im_end|>\n.
# `data.chat_template: chatml` selects it for tokenizers that ship without a template.
CHATML_TEMPLATE = (
    "{% for m in messages %}"
    "{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# looplm's own tasks have no chat format: a prompt is followed directly by its answer and the end token. An
# export of a looplm model (`looplm export-hf`) carries this template, so chat records (a user turn, an assistant
# turn) render exactly as the task encoded them, and the assistant target is the answer plus `<eos>`.
PLAIN_TEMPLATE = (
    "{% for m in messages %}{{ m['content'] }}{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}"
    "{% endfor %}"
)

# the keys templates write an assistant's reasoning from (Qwen3, DeepSeek-R1: reasoning_content; gpt-oss: thinking)
REASONING_KEYS = ("reasoning_content", "reasoning", "thinking")
# the tags of the reasoning an assistant's content holds itself (DeepSeek-R1, QwQ, Qwen3: `<think>...</think>answer`)
THINK = ("<think>", "</think>")
DATE = "26 Jul 2024"  # the date Llama 3.1's template writes when it is given none


class TemplateError(ValueError):
    """The chat template cannot be used to locate assistant tokens."""


class DroppedPart(TemplateError):
    """The chat template renders a conversation without part of it (`_check_rendered`)."""


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]  # -100 outside assistant targets

    @property
    def n_targets(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE)


def _render(tokenizer: Any, messages: list[dict[str, str]], add_generation_prompt: bool,
            chat_template: str | None, tools: list[dict] | None = None) -> str:
    # the date Llama 3.x's templates write (`date_string`, else strftime_now: today): fixed, so the same data renders
    # alike on every day (a resume after midnight was refused as changed data) and within one encoding
    chat_template = _template(tokenizer, chat_template)
    kw = {"date_string": DATE, **({"chat_template": chat_template} if chat_template is not None else {})}
    if tools:  # a record's tool definitions: the template writes them where it wants (a system turn, mostly)
        kw["tools"] = tools
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt,
                                             **kw)
    except Exception as e:
        raise TemplateError(f"the chat template fails to render a conversation ({template_failure(e)})") from None


def _template(tokenizer: Any, chat_template: Any) -> str | None:
    """`chat_template` as apply_chat_template takes it. `chatml` is looplm's ChatML, as data.chat_template reads it
    (through the API it was rendered as the constant text "chatml", then blamed for dropping the user turn); a
    tokenizer's named template transformers looks up; other text with no Jinja is refused, as finetune refuses it."""
    if chat_template is None:
        return None
    if not isinstance(chat_template, str):
        raise TypeError(f"chat_template must be a str (a Jinja template, chatml or a template's name), got "
                        f"{type(chat_template).__name__}")
    named = getattr(tokenizer, "chat_template", None)
    if "{{" in chat_template or "{%" in chat_template or (isinstance(named, dict) and chat_template in named):
        return chat_template
    if chat_template == "chatml":
        return CHATML_TEMPLATE
    raise TemplateError(f"chat_template {chat_template[:80]!r} is no Jinja template, nor chatml or a named template "
                        "of the tokenizer (a template file: read it with looplm.hf.finetune.chat_template, as "
                        "data.chat_template is)")


def template_failure(e: BaseException) -> str:
    """A chat template's failure as every command says it: its error type and first line. Whatever the template
    (the model's or the user's code) raises is its failure: a syntax error, raise_exception, a sandbox refusal, a
    plain Python error (`m.content + 1`: TypeError, which lm-eval's check let through as a traceback)."""
    why = str(e).strip().splitlines()[0][:200] if str(e).strip() else "no message"
    return f"{type(e).__name__}: {why}"


def _opening(tokenizer: Any, chat_template: str | None, full: str, tools: list[dict] | None = None) -> str:
    """What a template writes before the content of an assistant turn that opens a conversation (context): its role
    header (`<|im_start|>assistant\\n` in ChatML) and whatever it puts first (a default system turn, a BOS token),
    read off a render whose opening turn holds a marker; "" when the conversation does not start with it."""
    marker = "\u2063looplm\u2063"  # invisible separators: no template writes these of its own
    try:
        probe = _render(tokenizer, [{"role": "assistant", "content": marker}], False, chat_template, tools)
    except TemplateError:
        return ""
    at = probe.find(marker)
    head = probe[:at] if at >= 0 else ""
    return head if full.startswith(head) else ""


def says_something(m: dict[str, Any]) -> bool:
    """An assistant turn has something to learn: content that is not blank, or another key the template renders
    (tool_calls, reasoning_content). An empty turn is context (its end marker alone: "end the turn at once")."""
    return bool(str(m.get("content") or "").strip()) or any(
        v not in (None, "", [], {}) for k, v in m.items() if k not in ("role", "content", "weight", "name"))


def _marked(call: Any, mark: Any, what: str, arguments: bool) -> Any:
    """A tool definition or tool call ({"type": "function", "function": {...}} or {"name": ...}) with its name, and
    with `arguments` its non-empty arguments, replaced by `mark(what, shown)`'s sentinels."""
    f = _function(call)
    if not (isinstance(f.get("name"), str) and f["name"].strip()):
        return call
    name = f["name"].strip()
    f = {**f, "name": mark(what, f"{name!r} is")}
    if arguments and f.get("arguments") not in (None, "", "{}", {}):  # as the call writes them: an object or JSON
        value = {"value": mark(what, f"the arguments of {name!r} are")}
        f["arguments"] = value if isinstance(f["arguments"], dict) else json.dumps(value)
    return {**call, "function": f} if "function" in call else f


def _check_rendered(tokenizer: Any, messages: list[dict[str, Any]], chat_template: str | None,
                    tools: list[dict] | None, full: str, fix: str | None = None) -> None:
    """Refuse a conversation whose render lacks part of it: a template without system or tool turns, or one that
    ignores `tools` and `tool_calls` (ChatML as Ouro ships it), drops them in silence, and the model trains on a
    prompt, tool result or tool it never saw. (`fix`: the advice, for callers other than finetune and analyze.)

    Each part (the content of a turn of any role, the assistant's included: Llama 3.1's template writes only the
    calls of a turn with tool_calls; a tool's name, a tool call's or legacy function_call's name and arguments, an
    assistant's reasoning under REASONING_KEYS or in a `<think>` block of its content: _think_marked) is rendered
    as a sentinel of its own, a random token that the conversation does not hold, and the render must hold every
    sentinel. Looking for the part's own text in the render passed whenever that text stood elsewhere: a user turn
    naming the tool whose call the template drops, a dropped tool result that the assistant repeats. (A template
    that writes a turn as a JSON string, Llama 3.1's tool results, keeps the sentinel as it is.)"""
    tag = secrets.token_hex(8)
    while tag in full:  # (never, but a sentinel must be no text the conversation writes)
        tag = secrets.token_hex(8)
    parts: list[tuple[str, str, str, int]] = []  # (sentinel, which part, the part as the error names it, its turn)

    def mark(what: str, shown: str) -> str:
        parts.append((f"looplm{len(parts)}x{tag}", what, shown, len(probe)))  # (the turn being marked)
        return parts[-1][0]

    probe: list[dict[str, Any]] = []
    for m in messages:
        said, role = m.get("content"), m.get("role")
        # every turn, whatever its role: a template drops the roles it does not know (Qwen2.5's drops `function`,
        # Llama's data has `ipython`), and the assistant then answers a turn the model never read; an assistant's
        # text beside its tool calls (Llama 3.1's writes only the call) was a target the model never saw
        if isinstance(said, str) and said.strip():
            beside = role == "assistant" and bool(m.get("tool_calls") or m.get("function_call"))
            what = "text of an assistant turn with tool calls" if beside else f"{role} turn"
            m = {**m, "content": _think_marked(said, mark, what) if role == "assistant" and THINK[1] in said
                 else mark(what, f"{said.strip()[:40]!r} is")}
        if isinstance(m.get("tool_calls"), list):  # (to_messages refused any other shape)
            m = {**m, "tool_calls": [_marked(c, mark, "tool calls (an assistant turn's `tool_calls`)", True)
                                     for c in m["tool_calls"]]}
        if isinstance(m.get("function_call"), dict):  # OpenAI's legacy function calling: templates rarely write it
            m = {**m, "function_call": _marked(m["function_call"], mark, "function call (an assistant turn's "
                                               "`function_call`)", True)}
        for key in REASONING_KEYS:  # (ChatML drops it: the answer was trained on without its reasoning)
            if role == "assistant" and isinstance(m.get(key), str) and m[key].strip():
                m = {**m, key: mark(f"assistant's reasoning (`{key}`)", f"{m[key].strip()[:40]!r} is")}
        probe.append(m)
    tools = [_marked(t, mark, "tool definitions (the record's `tools`)", False) for t in tools] if tools else tools
    rendered = _render(tokenizer, probe, False, chat_template, tools)
    for sentinel, what, shown, turn in parts:
        if sentinel in rendered:
            continue
        lost = f"{what} ({shown} not in the conversation it renders)" if what.endswith(" turn") else \
            f"{what}: {shown} not in the conversation it renders"
        if fix is None and what.startswith("assistant's reasoning"):  # can it go in the content instead?
            fix = _advice(what, _keeps_think(tokenizer, chat_template, messages, turn, tools))
        raise DroppedPart(f"the chat template drops the {lost}, so the model would read the conversation without "
                          f"it; {fix or _advice(what)}")


def _think_marked(said: str, mark: Any, what: str) -> str:
    """An assistant content that holds its reasoning (`<think>reasoning</think>answer`, DeepSeek-R1's and QwQ's
    data) as sentinels in the same structure: the tags and the white space around each piece kept, each piece a
    sentinel of its own. DeepSeek-R1's and QwQ's templates keep only what follows `</think>` (Qwen3's does so in the
    turns before the last user turn), so one sentinel for the whole content, holding no `</think>`, passed while the
    reasoning was cut from the record's own render."""
    pieces = re.split(f"({re.escape(THINK[0])}|{re.escape(THINK[1])})", said)
    last_close = max(k for k, piece in enumerate(pieces) if piece == THINK[1])
    blocks = pieces.count(THINK[1])
    out = []
    for k, piece in enumerate(pieces):
        if piece in THINK or not piece.strip():
            out.append(piece)
            continue
        lead, trail = piece[: len(piece) - len(piece.lstrip())], piece[len(piece.rstrip()):]
        # a piece a </think> closes is reasoning; one before a later <think> (an answer between two blocks, text
        # before the first) is not, and was named so; templates keep one block before the answer
        if k > last_close:
            part = what
        elif next(p for p in pieces[k + 1:] if p in THINK) == THINK[0]:
            part = "text outside the <think> blocks of an assistant's content (before the last </think>)"
        elif blocks == 1:
            part = "reasoning in the assistant's content (its <think> block)"
        else:
            part = f"reasoning in an assistant's content with {blocks} <think> blocks"
        out.append(lead + mark(part, f"{piece.strip()[:40]!r} is") + trail)
    return "".join(out)


def _keeps_think(tokenizer: Any, chat_template: str | None, messages: list[dict[str, Any]], turn: int,
                 tools: list[dict] | None) -> bool:
    """Whether the template writes a `<think>` block in the content of `messages[turn]` (R1-style ones cut it), for
    the advice about a reasoning key it drops (Llama 3.1's kept it on a plain turn, not on a call's)."""
    sentinel = f"looplm{secrets.token_hex(8)}"
    m = {k: v for k, v in messages[turn].items() if k not in REASONING_KEYS}
    m["content"] = f"{THINK[0]}\n{sentinel}\n{THINK[1]}\n\n{m.get('content') or ''}"
    try:
        rendered = _render(tokenizer, [*messages[:turn], m, *messages[turn + 1:]], False, chat_template, tools)
    except TemplateError:
        return False
    return sentinel in rendered


def _advice(what: str, keeps_think: bool = False) -> str:
    """What to do about a template that drops `what` (a part as _check_rendered names it), said for finetune and
    analyze alike (analyze has no data.chat_template). `keeps_think`: the template keeps a `<think>` block in an
    assistant's content, so a dropped reasoning key can be written there (under R1-style templates it cannot)."""
    role = what.removesuffix(" turn")
    if role in ("system", "developer"):
        return ("use a chat template that writes system turns (finetune: data.chat_template), or records without "
                "one (and no data.system_prompt)")
    if what.startswith("function call"):
        return ("write it as `tool_calls` ([{\"type\": \"function\", \"function\": {name, arguments}}]) and "
                "its result as a `tool` turn, which templates that render tools write")
    if what.startswith("assistant's reasoning"):
        return "use a chat template that renders it (finetune: data.chat_template)" + (
            ", or write it into the content as a <think>...</think> block before the answer, which this template "
            "keeps" if keeps_think else "; this template also cuts a <think> block from the content, so moving "
            "the reasoning there does not help")
    if what.startswith(("text outside the <think>", "reasoning in an assistant's content with")):
        return ("write an assistant's reasoning as one <think>...</think> block at the start of its content and the "
                "answer after it: templates keep no more (Qwen3's keeps the first block and what follows the last "
                "</think>)")
    if what.startswith("reasoning in"):
        return ("use a template that keeps it (finetune: data.chat_template; DeepSeek-R1's and QwQ's keep only what "
                "follows </think>), or remove the <think> blocks to train on the answers alone")
    if what.startswith("text of"):
        return ("use a chat template that writes an assistant's text beside its tool calls (Qwen2.5's does; "
                "finetune: data.chat_template), or records whose turns with tool calls have no text")
    if what.endswith(" turn"):
        return f"use a chat template that writes {role} turns (finetune: data.chat_template)" + (
            "; a `function` turn is a `tool` turn in today's format" if role == "function" else "")
    return "use a chat template that renders tools (finetune: data.chat_template)"


def check_drops(tokenizer: Any, messages: list[dict[str, Any]], fix: str, chat_template: str | None = None) -> None:
    """DroppedPart when the chat template renders `messages` without part of them (`_check_rendered`, with the
    advice `fix`): an lm-eval prompt whose question the template drops was scored as if the model had read it."""
    _check_rendered(tokenizer, messages, chat_template, None, _render(tokenizer, messages, False, chat_template),
                    fix)


def assistant_spans(tokenizer: Any, messages: list[dict[str, str]], chat_template: str | None = None,
                    tools: list[dict] | None = None) -> tuple[str, list[tuple[int, int]]]:
    """(rendered text, [(start, end) character span of each assistant target])."""
    if not messages:
        raise TemplateError("empty conversation")
    if not (isinstance(messages, list) and all(isinstance(m, dict) for m in messages)):  # (an AttributeError)
        raise TypeError(f"messages must be a list of {{role, content}} dicts, got {type(messages).__name__} "
                        f"{repr(messages)[:80]}")
    messages = _arguments_as_objects(tokenizer, messages, chat_template, tools)
    full = _render(tokenizer, messages, False, chat_template, tools)
    _check_rendered(tokenizer, messages, chat_template, tools, full)
    spans = []
    for i, m in enumerate(messages):
        if m.get("role") != "assistant" or m.get("weight") == 0:  # weight 0 (OpenAI's format): context, not target
            continue
        if not says_something(m):
            continue
        prefix = (_render(tokenizer, messages[:i], True, chat_template, tools) if i
                  else _opening(tokenizer, chat_template, full, tools))
        upto = _render(tokenizer, messages[: i + 1], False, chat_template, tools)
        so_far = _render(tokenizer, messages[:i], False, chat_template, tools) if i else ""
        if not (full.startswith(upto) and upto.startswith(so_far)):
            raise TemplateError(unstable_why(tokenizer, so_far, upto, full, i))
        if not upto.startswith(prefix):
            extra = prefix[len(os.path.commonprefix([prefix, upto])):]
            raise TemplateError(f"the chat template's generation prompt ({extra!r} "
                                "after the conversation so far) is not how it renders the start of an assistant turn "
                                f"(turn {i}), so assistant tokens cannot be located")
        why = i and header_why(so_far, prefix, lambda head=messages[:i]: _render(  # a header the prompt leaves out
            tokenizer, [*head, {"role": "assistant", "content": MARKER}], False, chat_template, tools))
        if why:
            raise TemplateError(why)
        if not str(m.get("content") or "").strip() and _render(
                tokenizer, [*messages[:i], {**m, "content": ""}], False, chat_template, tools) == _render(
                tokenizer, [*messages[:i], {"role": "assistant", "content": ""}], False, chat_template, tools):
            continue  # blank content and nothing else the template renders (metadata keys): an empty turn
        end = len(upto.rstrip())
        if end <= len(prefix):
            continue  # an empty assistant turn
        spans.append((len(prefix), end))
    return full, spans


def encode_chat(tokenizer: Any, messages: list[dict[str, str]], chat_template: str | None = None,
                max_length: int | None = None, tools: list[dict] | None = None) -> Encoded:
    """Token ids and labels for one conversation (see the module docstring for what is a target).

    With `max_length`, the sequence is cut on the right; the caller decides what to do with examples whose
    targets were cut (see `Encoded.n_targets`).
    """
    text, spans = assistant_spans(tokenizer, messages, chat_template, tools)
    # verbose=False: no "longer than the model's maximum" warning; the caller cuts or drops long examples itself
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    ids, offsets = list(enc["input_ids"]), enc["offset_mapping"]
    labels = [IGNORE] * len(ids)
    k = 0
    for j, (start, end) in enumerate(offsets):
        if end <= start:
            continue
        while k < len(spans) and start >= spans[k][1]:
            k += 1
        if k < len(spans) and start < spans[k][1] and end > spans[k][0]:  # overlaps the target span
            labels[j] = ids[j]
    if max_length is not None and len(ids) > max_length:
        ids, labels = ids[:max_length], labels[:max_length]
    return Encoded(ids, labels)


ROLES = ("system", "developer", "user", "assistant", "tool")


def has_messages(record: dict[str, Any], messages_field: str = "messages") -> bool:
    """Whether data.format=auto reads `record` as a conversation. A null column is no messages: parquet and merged
    hub datasets fill the field of the other shape's records with null, and JSON exports with [] (those records,
    dropped as empty conversations, are prompt/response ones)."""
    return record.get(messages_field) not in (None, [])


def to_messages(record: dict[str, Any], fmt: str = "auto", messages_field: str = "messages",
                prompt_field: str = "problem", response_field: str = "solution",
                system_prompt: str | None = None) -> list[dict[str, str]] | None:
    """A data record -> a conversation, or None when it has nothing to learn from.

    fmt="messages": `record[messages_field]` is a list of {role, content, ...} (every key reaches the template);
    "prompt_response": one user turn from `prompt_field` and one assistant turn from `response_field`
    (NuminaMath: problem / solution), after the record's LLaMA-Factory `system` and `history` turns (`earlier_turns`);
    "auto": messages if the record has them (not null), else prompt/response. A message's OpenAI content parts
    (text only) are joined.
    `system_prompt` opens a conversation that has no system (or `developer`) turn of its own.
    """
    if not isinstance(record, dict):  # (an AttributeError on .get)
        raise TypeError(f"record must be a dict (one data record), got {type(record).__name__} {repr(record)[:80]}")
    check_arguments(fmt, messages_field, prompt_field, response_field, system_prompt)
    if fmt == "auto":
        fmt = "messages" if has_messages(record, messages_field) else "prompt_response"
    if fmt == "messages":
        msgs = record.get(messages_field)
        if msgs is not None and not isinstance(msgs, list):
            raise ValueError(f"{messages_field} must be a list of messages, got {type(msgs).__name__} "
                             f"{repr(msgs)[:80]}")
        if not msgs:
            return None
        msgs = [{**m, "content": ""} if _calls_only(m) else joined_parts(m, f"{messages_field}[{j}]")
                for j, m in enumerate(msgs)]
        for j, m in enumerate(msgs):
            role = m.get("role") if isinstance(m, dict) else None
            # first: `Assistant` with null content beside its tool_calls was no _calls_only turn, and got the
            # message below, for the content
            if isinstance(role, str) and role != role.lower() and role.lower() in ROLES:  # templates test ==
                raise ValueError(f"{messages_field}[{j}].role {role!r}: roles are lower case "
                                 f"({', '.join(ROLES)}); as written it is no {role.lower()} turn")
            if not (isinstance(role, str) and isinstance(m.get("content"), str)):
                sharegpt = isinstance(m, dict) and "from" in m and "value" in m
                raise ValueError(f"{messages_field}[{j}] must be an object with string `role` and `content`, got "
                                 f"{json.dumps(m)[:80]}" + ("; ShareGPT's from/value turns must become role/content "
                                                            "(human: user, gpt: assistant)" if sharegpt else ""))
            # (None: absent; parquet and hub data fill a key that only some messages have with null)
            if m.get("weight") is not None and (m["weight"] not in (0, 1) or isinstance(m["weight"], bool)):
                raise ValueError(f"{messages_field}[{j}].weight must be 0 (not trained on) or 1, got "
                                 f"{json.dumps(m['weight'])[:40]}")
            # a JSON string or a single object (stringified exports) was dropped by every template without a word
            calls = m.get("tool_calls")
            if calls is not None and not (isinstance(calls, list) and all(isinstance(c, dict) for c in calls)):
                raise ValueError(f"{messages_field}[{j}].tool_calls must be a list of objects (tool calls), got "
                                 f"{json.dumps(calls)[:80]}")
            if m.get("function_call") is not None and not isinstance(m["function_call"], dict):
                raise ValueError(f"{messages_field}[{j}].function_call must be an object (name, arguments), got "
                                 f"{json.dumps(m['function_call'])[:80]}")
            # a call a template cannot write was blamed on the template ("Undefined is not JSON serializable"), and
            # one without a name was dropped by ChatML unchecked (the drop check marks calls by their names)
            named = [(f"tool_calls[{k}]", c) for k, c in enumerate(calls or [])]
            if m.get("function_call") is not None:
                named.append(("function_call", m["function_call"]))
            for at, call in named:
                problem = call_problem(call, True)
                if problem:
                    raise ValueError(f"{messages_field}[{j}].{at} {problem}, got {shown_value(call)}")
            for key in REASONING_KEYS:  # a list or a number was no part the drop check knew: rendered as nothing
                if m.get(key) is not None and not isinstance(m[key], str):
                    raise ValueError(f"{messages_field}[{j}].{key} must be a string (the assistant's reasoning), "
                                     f"got {shown_value(m[key])}")
        check_text(msgs, messages_field)  # (a lone surrogate: the tokenizer's TypeError traceback)
        # the other keys too: a template may render them (reasoning_content in <think>, a speaker's name), and
        # what an assistant turn renders is its target. `tool_calls: []` (JSON exports fill the key on plain turns)
        # is no call: Llama 3.1's template takes any tool_calls key for one ("only supports single tool-calls")
        out = [*system_turn(record, msgs), *({k: v for k, v in m.items() if not (k == "tool_calls" and v == [])}
                                             for m in msgs)]
    elif fmt == "prompt_response":
        p, r = alpaca_prompt(record, prompt_field), record.get(response_field)
        for name, v in ((prompt_field, p), (response_field, r)):
            if v is not None and not isinstance(v, str):
                raise ValueError(f"{name} must be a string, got {type(v).__name__} {repr(v)[:80]}")
            check_text(v, name)
        if not p or not r or not p.strip() or not r.strip():
            return None
        out = [*earlier_turns(record), {"role": "user", "content": p}, {"role": "assistant", "content": r}]
    else:
        raise ValueError(f"unknown data format {fmt!r}; use auto, messages or prompt_response")
    # a record's own system turn is kept (OpenAI's newer exports name it `developer`)
    if system_prompt and not any(m["role"] in ("system", "developer") for m in out):
        out.insert(0, {"role": "system", "content": system_prompt})
    tools = record.get("tools")  # (None: absent, or a parquet column's fill)
    if tools is not None and not (isinstance(tools, list) and all(isinstance(t, dict) for t in tools)):
        raise ValueError(f"tools must be a list of tool definitions (objects), got {json.dumps(tools)[:80]}")
    for k, t in enumerate(tools or []):
        problem = call_problem(t, False)
        if problem:
            raise ValueError(f"tools[{k}] {problem}, got {shown_value(t)}")
    check_text(tools, "tools")
    for m in out:  # a truncated reasoning trace: templates (Qwen3's) train it as an answer beside an empty block
        if m["role"] == "assistant" and m["content"].rfind(THINK[0]) > m["content"].rfind(THINK[1]):
            raise ValueError(f"an assistant turn opens a <think> block it never closes ({m['content'][-40:]!r} at its "
                             "end: a reasoning trace cut short?); close it with </think> or leave the record out")
    if not any(m["role"] == "assistant" and says_something(m) and m.get("weight") != 0 for m in out):
        return None
    return out


def _calls_only(m: Any) -> bool:
    """An assistant turn that only calls tools, as OpenAI's format writes it: `content` null or absent beside its
    `tool_calls` (or legacy `function_call`). Its text is empty; templates write such a turn's calls
    (`{% if message.content %}`), and it was refused as a malformed message."""
    return (isinstance(m, dict) and m.get("role") == "assistant" and m.get("content") is None
            and bool(m.get("tool_calls") or m.get("function_call")))


def _function(call: Any) -> dict[str, Any]:
    f = call.get("function", call) if isinstance(call, dict) else None
    return f if isinstance(f, dict) else {}


def _arguments_as_objects(tokenizer: Any, messages: list[dict[str, Any]], chat_template: str | None,
                          tools: list[dict] | None) -> list[dict[str, Any]]:
    """`messages` with each call's JSON-string `arguments` (OpenAI's format) replaced by the object it holds, unless
    the template writes such a string as it is. Qwen2.5's and Llama 3.1's templates write `arguments | tojson`, so a
    string came out quoted and escaped (`"arguments": "{\\"city\\": ...}"`) and the model learned double-encoded
    calls; DeepSeek's concatenates the string (an object fails there) and Qwen3's writes either form. (to_messages
    refused a string that holds no JSON object.)

    The form is read off the record's own conversation, each string replaced by one of its own: a probe call of
    looplm's (no `id`) failed under templates that require one (Mistral's), and any failure made the strings
    objects. Where strings fail, objects are tried; where both do, the record is left as given."""
    def calls(m: dict[str, Any]) -> list[Any]:
        return [*(m.get("tool_calls") or []), *([m["function_call"]] if m.get("function_call") else [])]

    n = sum(isinstance(_function(c).get("arguments"), str) for m in messages for c in calls(m))
    if not n:
        return messages

    def each_string(value: Any) -> list[dict[str, Any]]:  # the k-th string arguments `text` -> value(text, k)
        k = iter(range(n))

        def change(call: Any) -> Any:
            f = _function(call)
            if not isinstance(f.get("arguments"), str):
                return call
            f = {**f, "arguments": value(f["arguments"], next(k))}
            return {**call, "function": f} if "function" in call else f

        out = []
        for m in messages:
            if isinstance(m.get("tool_calls"), list):
                m = {**m, "tool_calls": [change(c) for c in m["tool_calls"]]}
            if isinstance(m.get("function_call"), dict):
                m = {**m, "function_call": change(m["function_call"])}
            out.append(m)
        return out

    tag = secrets.token_hex(8)
    try:
        rendered = _render(tokenizer, each_string(lambda _, k: f'{{"looplm{tag}": {k}}}'), False, chat_template, tools)
        if any(f'{{"looplm{tag}": {k}}}' in rendered for k in range(n)):  # (a dropped call says nothing)
            return messages
    except TemplateError:  # strings fail: objects are the template's form only where they render
        try:
            _render(tokenizer, each_string(lambda _, k: {f"looplm{tag}": k}), False, chat_template, tools)
        except TemplateError:
            return messages  # (neither: not the arguments' form; the record's own render says what is wrong)

    def parsed(text: str, _: int) -> Any:
        value = json_object(text)
        return value if isinstance(value, dict) else text
    return each_string(parsed)


def no_default_template(tokenizer: Any, why: str = "which to use is not said") -> str | None:
    """What is wrong with a tokenizer whose chat template is a set of named ones (tokenizer_config.json's list of
    {name, template}) with none called "default", or None. transformers then asks for a template name, which only
    finetune takes (data.chat_template=NAME), so the advice says what works in every command. `why`: why no name
    reaches the tokenizer (lm-eval's --apply_chat_template takes one and never passes it on)."""
    named = getattr(tokenizer, "chat_template", None)
    if not isinstance(named, dict) or "default" in named:
        return None
    return (f"the tokenizer has named chat templates ({', '.join(sorted(named))}) and none called \"default\", so "
            f"{why}; write the one to use to chat_template.jinja in the model directory")


def end_of_turn_token(tokenizer: Any, chat_template: str | None = None) -> int | None:
    """The special token the template closes an assistant turn with (ChatML: <|im_end|>), or None.

    Generation should stop there; base checkpoints often name a different `eos_token` (Ouro: <|endoftext|>).
    """
    known = [t for t in getattr(tokenizer, "get_vocab", dict)() if len(t) == 1 and t.isalnum()]
    for a, b in (("1", "2"), *((c, c) for c in known[:1])):  # a character-level export may know no digits
        convo = [{"role": "user", "content": a}, {"role": "assistant", "content": b}]
        try:
            enc = encode_chat(tokenizer, convo, chat_template)
            break
        except DroppedPart as e:  # its '1' is this test's text, not a record's
            raise DroppedPart(f"on a test conversation (user turn {a!r}, assistant turn {b!r}), {e}") from None
        except TemplateError:
            raise
        except Exception as e:  # the tokenizers library's plain Exception: a character outside the vocabulary
            if "Missing [UNK]" not in str(e):
                raise
    else:
        raise TemplateError("it writes characters the tokenizer's vocabulary does not hold (an export of a "
                            "character-level run knows only its training characters); use a template made of them, "
                            "e.g. the export's own")
    text = _render(tokenizer, convo, False, chat_template)
    spans = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)["offset_mapping"]
    # the same with an unknown token (T5's, WordPiece's, a Unigram without byte fallback), where the reply's end is
    # what the model learns to write: ChatML's <|im_end|> was trained as <unk> pieces, and the last of them was taken
    # for the turn end (generation stopped at every <unk>). In the context (Llama 2's [INST]) it is only read.
    unk = getattr(tokenizer, "unk_token_id", None)
    unknown = sorted({text[s:e] for i, lab, (s, e) in zip(enc.input_ids, enc.labels, spans, strict=True)
                      if unk is not None and lab == i == unk and text[s:e].strip() not in (a, b)})
    if unknown:
        raise TemplateError(f"it ends an assistant turn with characters the tokenizer's vocabulary does not hold, "
                            f"read as its unknown token {tokenizer.unk_token!r} ({', '.join(map(repr, unknown[:6]))}), "
                            "so the model would learn to end its replies with that token; use a template whose turn "
                            "end the tokenizer knows (its own, if it has one), or add the marker to it as a special "
                            "token")
    at = [j for j, lab in enumerate(enc.labels) if lab != IGNORE]
    if not at:
        return None
    last, (s, e) = enc.input_ids[at[-1]], spans[at[-1]]
    special = set(getattr(tokenizer, "all_special_ids", [])) | set(getattr(tokenizer, "added_tokens_decoder", {}))
    # a special token the template spells (<unk> stands for unknown text; GPT-2's unk is its eos, which is spelled)
    return last if last in special and text[s:e].strip() == tokenizer.convert_ids_to_tokens(last) else None
