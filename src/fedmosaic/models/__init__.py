"""Models: per-modality encoders composed from torchvision/transformers, fusion, heads, training."""
