"""The cache defense of Orhan (2018), "A Simple Cache Model for Image Recognition" (NeurIPS).

- :class:`CacheModel`: a key-value memory of the training set's late-layer features mixed
  with the network's output (``model``), its keys (``features``), the exact and FAISS key
  search (``ops``, ``index``), saving and loading (``io``);
- :class:`CacheDefense` and the ``cache`` registration of the run harness (``defense``), with
  :class:`ClassTopMCache` as the BPDA surrogate in FAISS mode (``topm``).

The accuracy, depth, robustness and minimal-budget studies are in :mod:`advimage.studies.cache`.
"""

from advimage.defend.cache.defense import CacheDefense, build_cache_defense
from advimage.defend.cache.index import FaissKeyIndex, import_faiss
from advimage.defend.cache.io import CACHE_FORMAT, load_cache, read_cache_info, save_cache
from advimage.defend.cache.model import CacheModel, check_lambda, check_layers, check_theta
from advimage.defend.cache.topm import ClassTopMCache

__all__ = [
    "CACHE_FORMAT",
    "CacheDefense",
    "CacheModel",
    "ClassTopMCache",
    "FaissKeyIndex",
    "build_cache_defense",
    "check_lambda",
    "check_layers",
    "check_theta",
    "import_faiss",
    "load_cache",
    "read_cache_info",
    "save_cache",
]
