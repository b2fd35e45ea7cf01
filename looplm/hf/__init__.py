"""looplm's Hugging Face side: the only part of looplm that imports transformers (install the `hf` extra).

- `OuroConfig` / `OuroForCausalLM`: a native Ouro-architecture model that loads the published ByteDance
  checkpoints without remote code, with a per-call loop count and the one-loop map Φ exposed.
- `LooplmConfig` / `LooplmForCausalLM`: looplm's own LoopedTransformer as an HF model.
- `looplm.hf.finetune`: STARS fine-tuning (chat data, random loops, JSRR through Φ).
- `looplm.hf.lm_eval_adapter`: an lm-evaluation-harness model (`--model looplm`).
- `looplm.hf.lm_eval_depths`: `eval_depths`, lm-eval's tasks at each loop count (`looplm eval-lm`).
- `looplm.hf.answers`: GSM8K-style answer extraction (no transformers needed).

`looplm.hf.register()`, or the first use of any class here, registers both architectures with transformers'
Auto classes, so `AutoModelForCausalLM.from_pretrained(dir)` works for `model_type` "ouro" and "looplm". A bare
`import looplm.hf` does not (attribute access here is lazy, so that `looplm.hf.answers` and the command line
import without transformers).
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "OuroConfig": "configuration_ouro",
    "OuroModel": "modeling_ouro",
    "OuroForCausalLM": "modeling_ouro",
    "LooplmConfig": "looplm_hf",
    "LooplmForCausalLM": "looplm_hf",
    "convert_checkpoint": "looplm_hf",
    "register": "registry",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        mod = importlib.import_module(f".{_LAZY[name]}", __name__)
        importlib.import_module(".registry", __name__).register()
        return getattr(mod, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
