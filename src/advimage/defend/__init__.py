"""advimage.defend: defenses that wrap a classifier.

- :class:`CacheModel`: Orhan (2018), "A Simple Cache Model for Image Recognition": a
  key-value memory of the training set's late-layer features mixed with the network's output.
- :class:`NIMAutoencoder` / :class:`De3Defense`: You et al. (2023), noisy image modeling and
  its denoise-then-classify defense (``nim`` in the run harness).
"""

from advimage.defend.cache import CacheModel, check_lambda, check_theta
from advimage.defend.cache_index import FaissKeyIndex
from advimage.defend.cache_io import load_cache, save_cache
from advimage.defend.cache_tune import DEFAULT_LAMBDAS, DEFAULT_THETAS, TuneResult, tune_cache
from advimage.defend.nim_defense import De3Defense
from advimage.defend.nim_finetune import finetune as nim_finetune
from advimage.defend.nim_io import load_nim, save_nim
from advimage.defend.nim_model import NIMAutoencoder, NIMConfig
from advimage.defend.nim_train import pretrain as nim_pretrain

__all__ = [
    "CacheModel",
    "DEFAULT_LAMBDAS",
    "DEFAULT_THETAS",
    "De3Defense",
    "FaissKeyIndex",
    "NIMAutoencoder",
    "NIMConfig",
    "TuneResult",
    "check_lambda",
    "check_theta",
    "load_cache",
    "load_nim",
    "nim_finetune",
    "nim_pretrain",
    "save_cache",
    "save_nim",
    "tune_cache",
]

# registers the ``cache`` defense of the run harness (advimage.eval.defenses)
import advimage.defend.cache_eval  # noqa: E402,F401
