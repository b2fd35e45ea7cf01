"""Why a chat template is not prefix-stable, said for the case a user can fix (looplm.hf.chat's check)."""

from __future__ import annotations

import os
from typing import Any


def _token_starts(tokenizer: Any, text: str) -> list[int]:
    """Where each token of `text` starts, last first (each character's place where offsets are not to be had)."""
    try:
        offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        return sorted({s for s, _ in offsets if 0 < s}, reverse=True)
    except (NotImplementedError, KeyError, TypeError, ValueError):  # (a slow tokenizer has no offsets)
        return list(range(len(text) - 1, 0, -1))


def unstable_why(tokenizer: Any, so_far: str, upto: str, full: str, turn: int) -> str:
    """The refusal for a conversation of `turn` messages rendered as `so_far` that is no prefix of the conversation
    with one more turn (`upto`), or `upto` no prefix of the whole conversation (`full`). Phi-3's template writes
    eos_token after the last turn unless a generation prompt is asked for: every shorter conversation then ends
    with text the longer one does not have there, which is no turn changing earlier text. That text is the fewest
    last tokens (a special token is one: `<|endoftext|>` shares `<|` with `<|assistant|>`) without which the
    shorter rendering opens the longer one, and that end the longer one too."""
    if upto.startswith(so_far):
        so_far, upto = upto, full
    for start in _token_starts(tokenizer, so_far):
        if upto.startswith(so_far[:start]) and upto.endswith(so_far[start:]):
            return (f"the chat template writes {so_far[start:]!r:.60} after a conversation's last turn (when no "
                    f"generation prompt is asked for), so turn {turn} does not start where the conversation before "
                    "it ended and assistant tokens cannot be located; remove that text from the template's end (as "
                    "a `{% else %}{{ eos_token }}` branch after the messages loop), or end each assistant turn "
                    "with it instead")
    # where the shorter rendering departs from the longer one: the text a user can look for in the template (Qwen3's
    # writes an empty <think></think> block only into the turns after the last user turn)
    at = len(os.path.commonprefix([so_far, upto]))
    return (f"the chat template does not render conversations prefix-stably: turn {turn} changes earlier text (at "
            f"character {at}, {so_far[at:at + 40]!r} becomes {upto[at:at + 40]!r}), so assistant tokens cannot be "
            "located; split such conversations into one record per assistant turn (each ending at it), or use a "
            "template that writes earlier turns as it writes the last one")
