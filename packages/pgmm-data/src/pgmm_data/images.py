"""Opening image files robustly: moved to :mod:`pgmm_core.images` (shared with the Captioner).

The names stay importable from here for plugins and tools written against pgmm-data.
"""

from __future__ import annotations

from pgmm_core.images import DEFAULT_MAX_IMAGE_PIXELS, BadImage, check_header, open_rgb, to_rgb

__all__ = ["DEFAULT_MAX_IMAGE_PIXELS", "BadImage", "check_header", "open_rgb", "to_rgb"]
