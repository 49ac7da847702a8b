"""advimage.models: classifier wrapper, model registry, architectures and safe checkpoints."""

# Importing the architecture modules registers them with the model registry.
from advimage.models import efficientnet_lite as _efficientnet_lite  # noqa: F401
from advimage.models import nim_vit as _nim_vit  # noqa: F401
from advimage.models import resnet18_cifar as _resnet18_cifar  # noqa: F401
from advimage.models import resnet_cifar as _resnet_cifar  # noqa: F401
from advimage.models import small_cnn as _small_cnn  # noqa: F401
from advimage.models import vgg_cifar as _vgg_cifar  # noqa: F401
from advimage.models import vit as _vit  # noqa: F401
from advimage.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from advimage.models.classifier import ImageClassifier, wrap_model
from advimage.models.factory import create_model, list_models, register_model
from advimage.models.hf import load_hf_model
from advimage.models.reference import import_reference
from advimage.models.torchscript import load_torchscript

__all__ = [
    "CheckpointError",
    "ImageClassifier",
    "create_model",
    "import_reference",
    "list_models",
    "load_checkpoint",
    "load_hf_model",
    "load_torchscript",
    "register_model",
    "save_checkpoint",
    "wrap_model",
]
