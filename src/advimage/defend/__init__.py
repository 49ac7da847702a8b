"""advimage.defend: defenses that wrap a classifier.

- :class:`CacheModel`: Orhan (2018), "A Simple Cache Model for Image Recognition": a
  key-value memory of the training set's late-layer features mixed with the network's output.
"""

from advimage.defend.cache import CacheModel, check_lambda, check_theta
from advimage.defend.cache_index import FaissKeyIndex
from advimage.defend.cache_io import load_cache, save_cache
from advimage.defend.cache_tune import DEFAULT_LAMBDAS, DEFAULT_THETAS, TuneResult, tune_cache

__all__ = [
    "CacheModel",
    "DEFAULT_LAMBDAS",
    "DEFAULT_THETAS",
    "FaissKeyIndex",
    "TuneResult",
    "check_lambda",
    "check_theta",
    "load_cache",
    "save_cache",
    "tune_cache",
]

# registers the ``cache`` defense of the run harness (advimage.eval.defenses)
import advimage.defend.cache_eval  # noqa: E402,F401
