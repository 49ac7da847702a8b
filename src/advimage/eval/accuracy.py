"""Clean accuracy for the eval harness: re-exports :mod:`advimage.models.accuracy`.

The implementation lives on the models floor so that training (below eval) uses the same code.
"""

from advimage.models.accuracy import dataset_accuracy, evaluate_accuracy, predict_batches

__all__ = ["dataset_accuracy", "evaluate_accuracy", "predict_batches"]
