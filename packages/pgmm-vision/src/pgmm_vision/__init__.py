"""pgmm-vision: EVA-ViT-g and timm vision towers, the Q-Former connector and projectors for pgmm."""

__version__ = "0.1.0"
