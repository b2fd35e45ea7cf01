"""Register looplm's architectures with transformers' Auto classes, in this one place (idempotent)."""

from __future__ import annotations

import logging

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

log = logging.getLogger(__name__)


def register_model(config_cls: type, causal_lm_cls: type, base_cls: type | None = None) -> bool:
    """Map `config_cls.model_type` to these classes in AutoConfig / AutoModel / AutoModelForCausalLM.

    If transformers itself ships that model type (a future native "ouro"), its classes are kept and this returns
    False; use looplm's class directly to get the looplm interface.
    """
    mt = config_cls.model_type
    extra = getattr(CONFIG_MAPPING, "_extra_content", {})
    if mt in CONFIG_MAPPING and mt not in extra:
        log.warning("transformers ships its own %r model type; looplm's %s is not registered over it",
                    mt, causal_lm_cls.__name__)
        return False
    AutoConfig.register(mt, config_cls, exist_ok=True)
    if base_cls is not None:
        AutoModel.register(config_cls, base_cls, exist_ok=True)
    AutoModelForCausalLM.register(config_cls, causal_lm_cls, exist_ok=True)
    return True


def register() -> None:
    """Register both architectures ("ouro", "looplm")."""
    from .configuration_ouro import OuroConfig
    from .looplm_hf import LooplmConfig, LooplmForCausalLM
    from .modeling_ouro import OuroForCausalLM, OuroModel

    register_model(OuroConfig, OuroForCausalLM, OuroModel)
    register_model(LooplmConfig, LooplmForCausalLM)
