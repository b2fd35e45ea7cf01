"""lm-eval's end-of-text token for the looplm model (looplm.hf.lm_eval_adapter).

lm-eval's hf model takes its end-of-text token (a stop sequence of every generation) and its prefix token (what a
log-likelihood or a rolling window is conditioned on, and what tok_encode looks for at a text's start) from
`tokenizer.eos_token_id`. A tokenizer without an eos token (a BERT/WordPiece-style one of the user's own: [CLS],
[SEP] and no eos) made every task kind a TypeError traceback deep in lm-eval, though the model itself says where it
stops (generation_config.json's eos_token_id, which generate() stops on). `EndOfText` takes that id then, as if
the tokenizer had it as eos token, and refuses in one line a model that names none anywhere."""

from __future__ import annotations

import logging
from typing import Any

from ..errors import UserError
from .inputs import sdpa_only

NO_EOS = ("has no end-of-text token: its tokenizer has no eos_token and neither its generation_config.json nor its "
          "config.json gives an eos_token_id, and lm-eval needs one (to stop generation and to begin a scored "
          "text); set one: eos_token in tokenizer_config.json (e.g. \"[SEP]\"), or eos_token_id in "
          "generation_config.json")


def model_eos(model: Any, vocab: int) -> int | None:
    """The model's own end-of-text id: its generation config's eos_token_id (the first of a list, the one
    generate() lists first), else its config's; None when neither names a token of the tokenizer's `vocab`."""
    for cfg in (getattr(model, "generation_config", None), getattr(model, "config", None)):
        eos = getattr(cfg, "eos_token_id", None)
        eos = (eos[0] if eos else None) if isinstance(eos, (list, tuple)) else eos
        if isinstance(eos, int) and not isinstance(eos, bool) and 0 <= eos < vocab:
            return eos
    return None


class EndOfText:
    """A mixin before lm-eval's HFLM: `eot_token_id` and `prefix_token_id` fall back to the model's own eos id
    when the tokenizer has no eos token (call `take_model_eos` once the tokenizer and model are loaded). With no
    eos anywhere, either is refused in one line where lm-eval first needs it (a tokenizer with a bos token still
    scores log-likelihoods: bos is its prefix)."""

    _model_eos: int | None = None
    _named: Any = "the model"

    def take_model_eos(self) -> None:
        tok = self.tokenizer  # type: ignore[attr-defined]
        if tok.eos_token_id is not None:
            return
        self._model_eos = model_eos(self.model, len(tok))  # type: ignore[attr-defined]
        if self._model_eos is not None:
            logging.getLogger(__name__).warning(
                f"{self._named}: its tokenizer has no eos_token; lm-eval's end-of-text token is the model's own "
                f"eos_token_id {self._model_eos} ({tok.convert_ids_to_tokens(self._model_eos)!r}), which generation "
                "stops on")

    def _or_model_eos(self, own: int | None) -> int:
        if own is not None:
            return own
        if self._model_eos is None:
            raise UserError(f"{self._named} {NO_EOS}")
        return self._model_eos

    @property
    def eot_token_id(self) -> int:
        return self._or_model_eos(super().eot_token_id)  # type: ignore[misc]

    @property
    def prefix_token_id(self) -> int:
        return self._or_model_eos(super().prefix_token_id)  # type: ignore[misc]


def take_attn_implementation(kwargs: dict[str, Any]) -> None:
    """Take model_args attn_implementation out of `kwargs`: both looped models always run torch's SDPA, so "sdpa"
    (one of lm-eval's commonest model_args) changes nothing, and another is refused in the models' own words. It
    was refused as a key that is "not a setting ... and lm-eval's hf settings", a misspelling to hunt for."""
    requested = kwargs.pop("attn_implementation", None)
    try:
        sdpa_only("the looplm model", None if requested in (None, "") else str(requested))
    except ValueError as e:
        raise UserError(f"model_args: {e}") from None
