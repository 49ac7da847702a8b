"""advimage.defend: defenses, each a :class:`Defense` over a classifier (images in [0, 1] ->
logits), registered by name for run configs (:mod:`advimage.defend.registry`).

Registered defenses (one import line each below registers one file's defenses):

- ``none``, ``quantize`` (Xu, Evans & Qi, 2018), ``gaussian-noise`` (Cohen et al., 2019):
  :mod:`advimage.defend.baselines`;
- ``jpeg``: JPEG compression (Guo et al., 2018), :mod:`advimage.defend.jpeg`;
- ``cache``: Orhan (2018), "A Simple Cache Model for Image Recognition",
  :mod:`advimage.defend.cache`;
- ``nim``: You et al. (2023), noisy image modeling's denoise-then-classify De^3 defense,
  :mod:`advimage.defend.nim`.

Studies built on these defenses live in :mod:`advimage.studies`; nothing here imports the
evaluation harness.
"""

from advimage.defend import baselines, cache, jpeg, nim  # noqa: F401 -- registers the defenses
from advimage.defend.base import Defense, TransformDefense
from advimage.defend.baselines import NoDefense
from advimage.defend.cache import CacheDefense, CacheModel, FaissKeyIndex, load_cache, save_cache
from advimage.defend.nim import De3Defense, NIMAutoencoder, NIMConfig, load_nim, save_nim
from advimage.defend.registry import (
    DEFENSES,
    build_defense,
    defense_options,
    list_defenses,
    parse_defense_arg,
    register_defense,
)

__all__ = [
    "DEFENSES",
    "CacheDefense",
    "CacheModel",
    "De3Defense",
    "Defense",
    "FaissKeyIndex",
    "NIMAutoencoder",
    "NIMConfig",
    "NoDefense",
    "TransformDefense",
    "build_defense",
    "defense_options",
    "list_defenses",
    "load_cache",
    "load_nim",
    "parse_defense_arg",
    "register_defense",
    "save_cache",
    "save_nim",
]
