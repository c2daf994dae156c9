"""SRAGU benchmark core: pure algorithms (spectral α, sensitivities, unlearning methods, metrics,
forget-set selection, models).  Depends on torch/numpy/scipy/sklearn only — never on Ray, MLflow,
boto3, pyarrow or the ``components``/``pipelines`` layers (a test enforces this).
"""

from .data import DatasetSplits, Split, UnlearnData
from .errors import ConfigError
from .methods import METHODS, run_method
from .models import MODELS, ModelConfig, build_model
from .spectral import layer_alphas
from .training import TrainConfig, train

__all__ = ["ConfigError", "DatasetSplits", "Split", "UnlearnData", "METHODS", "run_method", "MODELS",
           "ModelConfig", "build_model", "layer_alphas", "TrainConfig", "train"]
