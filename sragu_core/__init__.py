"""SRAGU benchmark core: pure algorithms (spectral α, sensitivities, unlearning methods, metrics,
forget-set selection, models, ensemble training, metrics against distributions of models).  Depends on
torch/numpy/scipy/sklearn only — never on Ray, MLflow, boto3, pyarrow or the ``components``/``pipelines``
layers (a test enforces this).
"""

from .data import DatasetSplits, Split, UnlearnData
from .ensemble import Member, predict_ensemble, train_ensemble
from .errors import ConfigError
from .methods import METHODS, run_method
from .models import MODELS, ModelConfig, build_model
from .reference import klom, margins, pairwise_band, ulira
from .spectral import layer_alphas
from .training import TrainConfig, train

__all__ = ["ConfigError", "DatasetSplits", "Split", "UnlearnData", "METHODS", "run_method", "MODELS",
           "ModelConfig", "build_model", "layer_alphas", "TrainConfig", "train", "Member", "train_ensemble",
           "predict_ensemble", "klom", "margins", "pairwise_band", "ulira"]
