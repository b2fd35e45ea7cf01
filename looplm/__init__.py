"""looplm: looped (depth-recurrent) language models and STARS, stability-driven recurrent scaling.

The public API is small on purpose: configs, the model, samplers, regularizers, the addition task,
training and depth sweeps. Submodules hold the rest.
"""

from .config import Config, ConfigError, load_config
from .evaluate import generate, parse_depths, sweep
from .loops import sample_loops
from .model import LoopedTransformer, twice_differentiable
from .regularizers import fixed_point_residual, hutchinson, jsrr, jsrr_release, power_penalty
from .tasks import AdditionTask, CharTokenizer, read_addition_jsonl
from .train import train

__version__ = "0.1.0"

__all__ = [
    "AdditionTask", "CharTokenizer", "Config", "ConfigError", "LoopedTransformer", "twice_differentiable",
    "fixed_point_residual", "generate", "hutchinson", "jsrr", "jsrr_release", "load_config", "parse_depths",
    "power_penalty", "read_addition_jsonl", "sample_loops", "sweep", "train",
]
