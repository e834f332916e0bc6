"""``python -m pgmm_core convert`` round-trips a LAVIS BLIP-2 checkpoint and exports a run for transformers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from pgmm_core.config.loading import validate_config
from pgmm_core.model import build_model
from pgmm_core.plugins import PluginHost
from pgmm_core.testing import run_train, tiny_config

VISION_DATA = Path(__file__).parents[1] / "packages" / "pgmm-vision" / "tests" / "data"
STAGE2_PREFIXES = ("visual_encoder.", "ln_vision.", "query_tokens")


def cli(*args):
    return subprocess.run([sys.executable, "-m", "pgmm_core", "convert", *args], capture_output=True, text=True,
                          timeout=300)


def _small_model(checkpoint: Path):
    case = json.loads((VISION_DATA / "small_case.json").read_text())
    vit, qf = case["vit"], case["qformer"]
    config = tiny_config("/tmp/unused")
    config["model"]["vision"] = {"type": "eva_vit_g", "image_size": vit["img_size"], "patch_size": vit["patch_size"],
                                 "embed_dim": vit["embed_dim"], "depth": vit["depth"], "num_heads": vit["num_heads"],
                                 "mlp_dim": int(vit["embed_dim"] * vit["mlp_ratio"]), "checkpoint": str(checkpoint), "fused_attention": False}
    config["model"]["connector"] = {"type": "qformer", "num_query_tokens": case["num_query_token"],
                                    "hidden_size": qf["hidden_size"], "num_layers": qf["num_layers"],
                                    "num_heads": qf["num_heads"], "intermediate_size": qf["intermediate_size"],
                                    "checkpoint": str(checkpoint)}
    return build_model(validate_config(config, PluginHost(environ={}))).eval()


def test_lavis_to_pgmm_and_back(tmp_path):
    lavis = VISION_DATA / "small_blip2.pth"
    result = cli(str(lavis), str(tmp_path / "pgmm.safetensors"), "--to", "pgmm")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ignored, not used in stage 2" in result.stdout and "Q-Former text FFN" in result.stdout
    pgmm = load_file(str(tmp_path / "pgmm.safetensors"))
    assert any(k.startswith("connector.qformer.") for k in pgmm) and "connector.query_tokens" in pgmm

    result = cli(str(tmp_path / "pgmm.safetensors"), str(tmp_path / "back.pth"), "--to", "lavis")
    assert result.returncode == 0, result.stderr[-2000:]
    original = torch.load(lavis, weights_only=True)["model"]
    back = torch.load(tmp_path / "back.pth", weights_only=True)["model"]
    query_path = {k for k in original if k.startswith(STAGE2_PREFIXES) or (
        k.startswith("Qformer.bert.") and "_query" in k or ".attention." in k or "crossattention" in k
        or "embeddings.LayerNorm" in k)}
    query_path = {k for k in query_path if not k.startswith("Qformer.bert.embeddings.word")}
    assert set(back) == query_path
    for key in back:
        assert torch.equal(back[key], original[key]), key


def test_converted_pgmm_file_loads_and_matches_lavis(tmp_path):
    cli(str(VISION_DATA / "small_blip2.pth"), str(tmp_path / "pgmm.safetensors"), "--to", "pgmm")
    golden = load_file(str(VISION_DATA / "small_io.safetensors"))
    for checkpoint in (VISION_DATA / "small_blip2.pth", tmp_path / "pgmm.safetensors"):
        model = _small_model(checkpoint)
        with torch.no_grad():
            out = model.encode_image(golden["pixel_values"])
        assert (out.query_embeds - golden["query_output"]).abs().max() < 1e-4, checkpoint


def test_run_exports_transformers_blip2_weights(tmp_path):
    from transformers import Blip2QFormerConfig, Blip2QFormerModel

    config = tiny_config(tmp_path / "run", train={"max_steps": 2})
    config["data"]["val"] = []
    assert run_train(config, tmp_path).returncode == 0
    result = cli(str(tmp_path / "run"), str(tmp_path / "hf.safetensors"), "--to", "hf", "--checkpoint", "last")
    assert result.returncode == 0, result.stderr[-2000:]
    hf = load_file(str(tmp_path / "hf.safetensors"))
    assert {"query_tokens", "vision_model.post_layernorm.weight", "language_projection.0.weight"} <= set(hf)
    qformer = {k[len("qformer."):]: v for k, v in hf.items() if k.startswith("qformer.")}
    c = config["model"]["connector"]
    model = Blip2QFormerModel(Blip2QFormerConfig(
        hidden_size=c["hidden_size"], num_hidden_layers=c["num_layers"], num_attention_heads=c["num_heads"],
        intermediate_size=c["intermediate_size"], encoder_hidden_size=config["model"]["vision"]["embed_dim"],
        use_qformer_text_input=False))
    missing, unexpected = model.load_state_dict(qformer, strict=False)
    assert not unexpected and not [k for k in missing if "position_ids" not in k]


def test_unknown_source_is_a_clear_error(tmp_path):
    result = cli(str(tmp_path / "nothing.pth"), str(tmp_path / "out.safetensors"), "--to", "pgmm")
    assert result.returncode == 3 and "not found" in result.stderr and "Traceback" not in result.stderr


def test_a_wrong_from_is_refused_not_written(tmp_path):
    lavis = VISION_DATA / "small_blip2.pth"
    target = tmp_path / "out.safetensors"
    result = cli(str(lavis), str(target), "--to", "pgmm", "--from", "eva")
    assert result.returncode == 3 and "Traceback" not in result.stderr
    assert "--from eva, but its keys are in the lavis layout" in result.stderr
    assert not target.exists()
