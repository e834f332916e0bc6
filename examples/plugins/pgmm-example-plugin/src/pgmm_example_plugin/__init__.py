"""An example pgmm plugin: ``cnn_tokens`` (a vision encoder), ``attention_pool`` (a connector),
``image_folder_captions`` (a dataset) and ``grad_norm_log`` (a training callback).

Importing this package imports nothing heavy; pgmm finds the plugin through the ``pgmm`` entry point
declared in ``pyproject.toml`` (``example = "pgmm_example_plugin.plugin"``).
"""

__version__ = "0.1.0"
