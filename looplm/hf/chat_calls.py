"""Tool calls and tool definitions in chat records, checked before a template writes them: their names, their
`arguments` (an object, or a JSON string of one), and JSON that json.loads reads but is no JSON."""

from __future__ import annotations

import json
from typing import Any


def shown_value(v: Any) -> str:  # (a value as an error shows it)
    return json.dumps(v, default=repr)[:80]


def call_problem(call: dict[str, Any], is_call: bool) -> str | None:
    """What keeps a tool call (`is_call`) or a tool definition, {"type": "function", "function": {name, ...}} or
    {name, ...}, from being written by a template, or None."""
    f = call.get("function", call)
    if not isinstance(f, dict):
        return f"has a `function` that is no object ({'name, arguments' if is_call else 'name, parameters'})"
    if not (isinstance(f.get("name"), str) and f["name"].strip()):
        return "has no name (a non-empty string)"
    if is_call and "arguments" not in f:  # templates write tool_call.arguments: Undefined, said as the template's
        if "parameters" in f:  # (a common export variant)
            return "has `parameters` where a call has `arguments` (`parameters` is a tool definition's key)"
        return "has no `arguments` (an object, or a JSON string of one; {} for none)"
    if is_call and isinstance(f["arguments"], str):
        try:
            if not isinstance(json_object(f["arguments"], strict=True), dict):
                return ("has `arguments` that are a string but no JSON object (OpenAI's format writes them as one: "
                        "'{\"city\": \"Paris\"}'; {} for none)")
        except NotJson as e:
            return f"has `arguments` whose JSON {e}"
    return None


class NotJson(ValueError):
    """Text json.loads reads that is no JSON."""


def json_object(text: str, strict: bool = False) -> Any:
    """The value of JSON `text`, or None where it is no JSON, or where json.loads reads more than JSON (`strict`:
    NotJson): NaN and Infinity (floats, trained as `NaN` under tojson templates), a key twice in an object (the
    last value was kept in silence)."""
    def constant(name: str) -> Any:
        raise NotJson(f"holds {name}, which is no JSON value (write null or a number)")

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: set[str] = set()
        for key, _ in items:
            if key in seen:
                raise NotJson(f"has the key {json.dumps(key)} twice in one object (a reader keeps one of its "
                               "values; write each key once)")
            seen.add(key)
        return dict(items)

    try:
        return json.loads(text, parse_constant=constant, object_pairs_hook=pairs)
    except NotJson:
        if strict:
            raise
        return None
    except (ValueError, RecursionError):
        return None
