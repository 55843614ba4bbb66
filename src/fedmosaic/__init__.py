"""fedmosaic: multimodal federated learning for parties that hold different modalities."""

from fedmosaic._compat import ensure_torchvision_importable

ensure_torchvision_importable()

__version__ = "0.1.0"
