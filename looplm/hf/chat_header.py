"""An assistant header that a chat template's generation prompt leaves out (kept apart: chat.py is near its size
limit). A template with no `add_generation_prompt` branch (many hand-written ones) renders nothing for the
generation prompt, yet opens each assistant turn with a role header (`ASSISTANT: `). The target starts where the
generation prompt ends, so that header was trained as part of every reply. At inference the prompt ends before
the header (--apply-chat-template renders none), and the model had learned to write the header itself."""

from __future__ import annotations

from collections.abc import Callable

# invisible separators around the content of a probe turn: no template writes these of its own
MARKER = "\u2063looplm-content\u2063"


def header_why(so_far: str, prompted: str, probe: Callable[[], str]) -> str | None:
    """Why the template cannot be trained on, or None. `so_far`: the conversation before an assistant turn;
    `prompted`: the same with the generation prompt; `probe()`: the same followed by an assistant turn whose
    content is MARKER (rendered only when the generation prompt is empty). A template with an empty generation
    prompt and no header (the reply right after the user turn, as Llama 2's `[/INST]` does) is sound: its prompt
    already ends where the reply starts."""
    if prompted != so_far:
        return None
    try:
        probe_text = probe()
    except ValueError:  # (the template fails on a plain turn: the record's own render said what it could)
        return None
    if not probe_text.startswith(so_far) or MARKER not in probe_text[len(so_far):]:
        return None
    header = probe_text[len(so_far):probe_text.index(MARKER, len(so_far))]
    if not header.strip():
        return None
    return (f"the chat template writes no generation prompt (add_generation_prompt renders nothing), but opens an "
            f"assistant turn with {header!r}, so that header would be trained as part of every reply, and a prompt "
            "rendered for generation would end before it; add an `{% if add_generation_prompt %}` branch at the "
            f"template's end that writes {header!r}")
