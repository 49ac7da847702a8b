"""Studies of the cache model of Orhan (2018), "A Simple Cache Model for Image Recognition".

- ``tune``: (theta, lambda) grid search on held-out training images (``tune_cache``);
- ``experiment``: build, tune and score a cache end to end (``run_cache_experiment``);
- ``study``: the accuracy and depth studies and the ``python -m advimage.studies.cache.study``
  command line;
- ``robust`` / ``minimal``: adaptive robustness and per-image smallest fooling budgets;
- ``stats``: the paired bootstrap of an accuracy gain;
- ``report``: the tables and plots of ``reports/cache``.
"""
