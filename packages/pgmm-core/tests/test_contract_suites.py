"""The contract suites themselves: opt-in, and able to fail.

A contract that cannot fail is worth nothing, so a deliberately broken plugin is installed into a
temporary site directory and the contracts are run against it in a separate pytest process.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys

from pgmm_core.testing import install_fake_distribution

BROKEN_PLUGIN = '''
import torch  # heavy import at plugin import time: `plugins`, `schema`, `validate` would pay for it
from typing import Literal
from pgmm_core.config.sections import ComponentConfig
from pgmm_core.hookspecs import hookimpl

class MapConfig(ComponentConfig):
    type: Literal["feature_map"] = "feature_map"
    freeze: bool = True

class MaskBlindConfig(ComponentConfig):
    type: Literal["mask_blind"] = "mask_blind"

class ClipAlwaysConfig(ComponentConfig):
    type: Literal["clip_always"] = "clip_always"

@hookimpl
def pgmm_register_vision_encoders(registrar):
    registrar.add("feature_map", "pgmm_bad_impl:FeatureMap", MapConfig, description="returns B×C×h×w")

@hookimpl
def pgmm_register_connectors(registrar):
    registrar.add("mask_blind", "pgmm_bad_impl:build_mask_blind", MaskBlindConfig, description="ignores masks")

@hookimpl
def pgmm_register_datasets(registrar):
    registrar.add("clip_always", "pgmm_bad_impl:build_clip_always", ClipAlwaysConfig,
                  description="normalises with CLIP's statistics whatever the encoder")
'''

BROKEN_IMPL = '''
import torch
from torch import nn

from pgmm_core.preprocessing import clip_spec

class FeatureMap(nn.Module):
    """Forgets to flatten its feature map to tokens; its config cannot tell its image spec."""
    def __init__(self, config):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 8, stride=8)
        self.out_features, self.image_size, self.frozen = 8, 32, config.freeze
        self.image_spec = clip_spec(32)
    def forward(self, pixel_values):
        return self.conv(pixel_values)

class MaskBlind(nn.Module):
    """Mean-pools all vision tokens, masked or not."""
    def __init__(self, width):
        super().__init__()
        self.proj = nn.Linear(width, 16)
        self.out_features, self.num_query_tokens = 16, 2
    def forward(self, vision_embeds, vision_mask=None):
        return self.proj(vision_embeds.mean(1, keepdim=True)).expand(-1, 2, -1)

def build_mask_blind(config, *, encoder_width):
    return MaskBlind(encoder_width)

class ClipAlways:
    """Ignores the image spec it is given: noise images normalised with CLIP's mean/std."""
    def __init__(self, split, size):
        self.split, self.size = split, size
    def __len__(self):
        return 4
    def __getitem__(self, index):
        if not 0 <= index < 4:
            raise IndexError(index)
        raw = torch.rand(3, self.size, self.size, generator=torch.Generator().manual_seed(index))
        mean = torch.tensor((0.48145466, 0.4578275, 0.40821073)).view(3, 1, 1)
        std = torch.tensor((0.26862954, 0.26130258, 0.27577711)).view(3, 1, 1)
        image = (raw - mean) / std
        if self.split == "train":
            return {"image": image, "caption": "noise", "image_id": f"noise_{index}"}
        return {"image": image, "image_id": index, "references": ["noise"]}

def build_clip_always(config, *, split, image_spec, image_size):
    return ClipAlways(split, image_size)
'''

TESTS = '''
from pgmm_core.testing.contracts import ConnectorContract, DatasetContract, VisionEncoderContract

class TestFeatureMap(VisionEncoderContract):
    component = "feature_map"
    distribution = "pgmm-bad"

class TestMaskBlind(ConnectorContract):
    component = "mask_blind"
    distribution = "pgmm-bad"

class TestClipAlways(DatasetContract):
    component = "clip_always"
    distribution = "pgmm-bad"

class TestNotInstalled(VisionEncoderContract):
    component = "nowhere"
    distribution = "pgmm-nowhere"
'''

FIXTURES = '''
import os

def test_fixtures(pgmm_host, pgmm_tiny_config, pgmm_cache_dir):
    assert "eva_vit_g" in pgmm_host.registry("vision")
    assert pgmm_tiny_config()["train"]["output_dir"].endswith("run")
    assert os.environ["PGMM_CACHE_DIR"] == pgmm_cache_dir
'''


def run_pytest(tmp_path, site, *args, **extra_env):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGMM_")}
    # a clean shell's PGMM_* settings, but components' cached files still stay in this test's tmp_path
    env["PGMM_CACHE_DIR"] = str(tmp_path / "pgmm-cache")
    env["PYTHONPATH"] = os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])
    env.update(extra_env)
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", "--rootdir",
                           str(tmp_path), *args], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=300)


def test_contracts_catch_broken_components(tmp_path):
    site = tmp_path / "site"
    install_fake_distribution(site, "pgmm-bad", "0.1.0", {"pgmm_bad": BROKEN_PLUGIN, "pgmm_bad_impl": BROKEN_IMPL},
                              {"bad": "pgmm_bad"})
    (tmp_path / "test_bad.py").write_text(TESTS)
    result = run_pytest(tmp_path, site, "test_bad.py")
    out = result.stdout
    assert result.returncode == 1, out[-3000:]
    for failing in ("TestFeatureMap::test_plugin_module_imports_without_torch",
                    "TestFeatureMap::test_outputs_tokens",
                    "TestFeatureMap::test_config_gives_the_image_spec_without_building",
                    "TestMaskBlind::test_plugin_module_imports_without_torch",
                    "TestMaskBlind::test_masked_vision_tokens_are_ignored",
                    "TestClipAlways::test_normalises_with_the_encoders_statistics",
                    "TestNotInstalled::test_registered_by_its_distribution"):
        assert f"FAILED test_bad.py::{failing}" in out, out[-6000:]
    assert "flatten feature maps to tokens" in out
    assert "MapConfig needs an image_spec() method" in out
    assert "normalise with the image_spec the factory received" in out
    assert "masked vision tokens changed the output" in out
    assert "imported ['torch']" in out
    assert "distribution pgmm-nowhere is not installed" in out
    for passing in ("TestFeatureMap::test_config_round_trip", "TestFeatureMap::test_declares_its_image_spec",
                    "TestMaskBlind::test_outputs_query_tokens", "TestClipAlways::test_train_items",
                    "TestClipAlways::test_eval_items"):
        assert f"PASSED test_bad.py::{passing}" in out


def test_pytest_plugin_is_opt_in(tmp_path):
    (tmp_path / "test_fixtures.py").write_text(FIXTURES)
    without = run_pytest(tmp_path, tmp_path, "test_fixtures.py")
    assert without.returncode == 1 and "fixture 'pgmm_host' not found" in without.stdout
    enabled = run_pytest(tmp_path, tmp_path, "-p", "pgmm_core.testing.pytest_plugin", "test_fixtures.py")
    assert enabled.returncode == 0, enabled.stdout[-3000:]
    assert "pgmm plugins: core (pgmm-core 0.1.0) loaded" in enabled.stdout
    pytest11 = [ep for ep in importlib.metadata.entry_points(group="pytest11") if ep.value.startswith("pgmm")]
    assert pytest11 == []


GOOD_PLUGIN = '''
from typing import Literal
from pgmm_core.config.sections import ComponentConfig
from pgmm_core.hookspecs import hookimpl

class GoodLoggerConfig(ComponentConfig):
    type: Literal["good_logger"] = "good_logger"

@hookimpl
def pgmm_register_callbacks(registrar):
    registrar.add("good_logger", "pgmm_good_impl:GoodLogger", GoodLoggerConfig, description="logs losses")
'''

GOOD_IMPL = '''
from pgmm_core.hookspecs import hookimpl

class GoodLogger:
    def __init__(self, config):
        self.losses = []

    @hookimpl
    def pgmm_on_step_end(self, step, metrics):
        self.losses.append(metrics.get("loss"))
'''

CLASHING_PLUGIN = '''
from typing import Literal
from pgmm_core.config.sections import ComponentConfig
from pgmm_core.hookspecs import hookimpl

class ShadowConfig(ComponentConfig):
    type: Literal["mlp2x_gelu"] = "mlp2x_gelu"

@hookimpl
def pgmm_register_projectors(registrar):
    registrar.add("mlp2x_gelu", "pgmm_shadow_impl:build", ShadowConfig, description="takes a first-party name")
'''

GOOD_TESTS = '''
from pgmm_core.testing.contracts import CallbackContract

class TestGoodLogger(CallbackContract):
    component = "good_logger"
    distribution = "pgmm-good"
'''


def test_each_plugins_contracts_run_in_isolation_and_honour_disable(tmp_path):
    """Another installed plugin that clashes with a first-party name (the tiny test model's
    projector) does not fail pgmm-good's contracts; PGMM_DISABLE_PLUGINS skips them, saying why."""
    site = tmp_path / "site"
    install_fake_distribution(site, "pgmm-good", "0.1.0", {"pgmm_good": GOOD_PLUGIN, "pgmm_good_impl": GOOD_IMPL},
                              {"good": "pgmm_good"})
    install_fake_distribution(site, "pgmm-shadow", "0.1.0", {"pgmm_shadow": CLASHING_PLUGIN}, {"shadow": "pgmm_shadow"})
    (tmp_path / "test_good.py").write_text(GOOD_TESTS)
    result = run_pytest(tmp_path, site, "test_good.py")
    assert result.returncode == 0, result.stdout[-6000:]
    for passing in ("test_registered_by_its_distribution", "test_config_validates_in_its_slot",
                    "test_takes_every_event_it_implements"):
        assert f"PASSED test_good.py::TestGoodLogger::{passing}" in result.stdout

    disabled = run_pytest(tmp_path, site, "test_good.py", PGMM_DISABLE_PLUGINS="pgmm-good")
    assert disabled.returncode == 0, disabled.stdout[-6000:]
    assert "PASSED" not in disabled.stdout
    assert "SKIPPED" in disabled.stdout and "pgmm-good is disabled by PGMM_DISABLE_PLUGINS" in disabled.stdout
