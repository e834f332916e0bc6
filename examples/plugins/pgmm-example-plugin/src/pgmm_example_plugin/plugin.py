"""The plugin module the ``pgmm`` entry point names: registration only, so it imports no torch.

Each hook receives a registrar for one component kind. ``registrar.add`` takes the name users write
in ``type``, the factory as a ``"module:attr"`` string (imported only when the component is built),
the pydantic config model, and a one-line description for ``python -m pgmm_core plugins``.
"""

from __future__ import annotations

from pgmm_core.hookspecs import hookimpl
from pgmm_example_plugin.configs import (AttentionPoolConfig, CnnTokensConfig, GradNormLogConfig,
                                        ImageFolderCaptionsConfig)


@hookimpl
def pgmm_register_vision_encoders(registrar):
    registrar.add("cnn_tokens", "pgmm_example_plugin.encoder:build_cnn_tokens", CnnTokensConfig,
                  description="a timm CNN's last feature map, one token per position (local weights only)")


@hookimpl
def pgmm_register_connectors(registrar):
    registrar.add("attention_pool", "pgmm_example_plugin.connector:build_attention_pool", AttentionPoolConfig,
                  description="learned queries that cross-attend once to the vision tokens (honours vision_mask)")


@hookimpl
def pgmm_register_datasets(registrar):
    registrar.add("image_folder_captions", "pgmm_example_plugin.folder:build_image_folder_captions",
                  ImageFolderCaptionsConfig,
                  description="a folder of images with a captions.json mapping each file to its captions")


@hookimpl
def pgmm_register_callbacks(registrar):
    registrar.add("grad_norm_log", "pgmm_example_plugin.grad_norms:build_grad_norm_log", GradNormLogConfig,
                  description="gradient norms before every optimizer step, per model part, in grad_norms.jsonl")
