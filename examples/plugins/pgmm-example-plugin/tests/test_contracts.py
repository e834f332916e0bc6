"""The example's components checked by pgmm's contract suites: this is most of a plugin's tests.

Each class names one registered component, the distribution that registers it, and a tiny config;
the contract does the rest (registration through the installed entry point, config model, import
without torch, construction on CPU, shapes, dtypes, freezing, a step of a tiny model). The plugin
must be installed for this (``pip install -e .``), since that is how pgmm finds it.
"""

from __future__ import annotations

import pytest

from pgmm_core.testing.contracts import (CallbackContract, ConnectorContract, DatasetContract,
                                         VisionEncoderContract)
from pgmm_example_plugin.demo_folder import write_demo_folder

TINY_CONVNEXT = {"model_name": "convnext_atto", "image_size": 64,
                 "model_kwargs": {"depths": [1, 1, 1, 1], "dims": [16, 32, 48, 64]}}


class TestCnnTokens(VisionEncoderContract):
    component = "cnn_tokens"
    distribution = "pgmm-example-plugin"
    config = TINY_CONVNEXT


class TestResNetTokens(VisionEncoderContract):
    """A CNN with BatchNorm: frozen must mean running statistics, whatever model.train() says."""

    component = "cnn_tokens"
    distribution = "pgmm-example-plugin"
    config = {"model_name": "resnet10t", "image_size": 64,
              "model_kwargs": {"stem_width": 8, "channels": [8, 16, 32, 64]}}


class TestAttentionPool(ConnectorContract):
    """Among its checks: masked vision tokens do not change the output (``vision_mask`` 0 = ignore)."""

    component = "attention_pool"
    distribution = "pgmm-example-plugin"
    config = {"num_query_tokens": 4, "hidden_size": 32, "num_heads": 2}


class TestImageFolderCaptions(DatasetContract):
    component = "image_folder_captions"
    distribution = "pgmm-example-plugin"

    @pytest.fixture(scope="class")
    @classmethod
    def component_fields(cls, tmp_path_factory):
        folder = write_demo_folder(tmp_path_factory.mktemp("folder"), split="train", count=6, size=40)
        return {"root": str(folder)}


class TestGradNormLog(CallbackContract):
    component = "grad_norm_log"
    distribution = "pgmm-example-plugin"
    config = {"every": 1}
