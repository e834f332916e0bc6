"""Fixtures for pgmm-vision's tests: a plugin host, the LAVIS goldens, LAVIS-format files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pgmm_core.plugins import PluginHost

DATA = Path(__file__).parent / "data"
SMALL_CHECKPOINT = DATA / "small_blip2.pth"


@pytest.fixture(scope="session")
def host():
    return PluginHost(environ={})


@pytest.fixture(scope="session")
def small_meta():
    meta = json.loads((DATA / "small_case.json").read_text())
    meta["data_dir"] = str(DATA)
    return meta


@pytest.fixture(scope="session")
def small_io():
    from safetensors.torch import load_file

    return load_file(str(DATA / "small_io.safetensors"))


@pytest.fixture
def lavis_state():
    """The small case's LAVIS state dict (a fresh copy per test, safe to edit)."""
    return dict(torch.load(str(SMALL_CHECKPOINT), map_location="cpu", weights_only=True)["model"])


@pytest.fixture(scope="session")
def build(host):
    """``build(kind, config_dict, **context)``: a component through the registry, as build_model does."""

    def make(kind, data, **context):
        spec = host.registry(kind).get(data["type"])
        return spec.build(spec.config_model(**data), **context)

    return make


@pytest.fixture
def save_lavis(tmp_path):
    """``save_lavis(state, name="ckpt.pth", **extra)``: a file in LAVIS' ``_save_checkpoint`` layout,
    ``{"model": state_dict, ...}``."""

    def save(state, name="ckpt.pth", **extra):
        path = tmp_path / name
        torch.save({"model": state, **extra}, str(path))
        return path

    return save


@pytest.fixture(scope="session")
def small_checkpoint():
    return SMALL_CHECKPOINT
