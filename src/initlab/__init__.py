"""initlab: weight initialization and training-stability tools for the course
"Stable Training & Reasonable Initialization".

Modules (one per concept)::

    initlab.init         torch.nn.init superset with one variance-scaling core
    initlab.lsuv         data-dependent LSUV initialization
    initlab.residual     zero-init-residual, Fixup, ReZero/SkipInit
    initlab.theory       predicted forward/backward variance (mean-field)
    initlab.diagnostics  per-layer activation/gradient statistics
    initlab.train        a small training loop with clipping and guards
    initlab.models       MLP/RNN/GPT builders
    initlab.mup          maximal update parametrization (muP): init and learning rates
    initlab.data         offline data sets
    initlab.plots        the course's figures
    initlab.grading      exercise build and grading
    initlab.errors       the exceptions for bad arguments, and the rule they follow

Submodules are imported on first use, so ``import initlab`` stays fast.
"""

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_SUBMODULES = (
    "init",
    "lsuv",
    "residual",
    "theory",
    "diagnostics",
    "train",
    "models",
    "mup",
    "data",
    "plots",
    "grading",
    "errors",
)
# Convenience re-exports: name -> submodule.
_EXPORTS = {
    "lsuv_": "lsuv",
    "init_model_": "init",
    "fit": "train",
    "record": "diagnostics",
    "gaussian_expectation": "theory",
    "format_table": "plots",
    "residual_init_": "residual",
    "ArgumentError": "errors",
    "ArgumentTypeError": "errors",
}

__all__ = [*_SUBMODULES, *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return import_module(f"initlab.{name}")
    if name in _EXPORTS:
        return getattr(import_module(f"initlab.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'initlab' has no attribute {name!r}")
