"""The openpangu backend: loss, gradient checkpointing, dtypes, and the errors a user can meet."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch.utils._python_dispatch import TorchDispatchMode

from pgmm_core.errors import CheckpointError
from pgmm_pangu import checkpoint
from pgmm_pangu.backend import build_openpangu
from pgmm_pangu.configs import OpenPanguConfig

DATA = Path(__file__).parent / "data"

def build(path, **options):
    return build_openpangu(OpenPanguConfig(path=str(path), **options))


def stage2_batch(backend, captions, visual_tokens=4, seed=0):
    """[visual | BOS caption EOS | pad] with labels on caption and EOS, as MultimodalModel builds it."""
    tok = backend.tokenizer
    rows = [[tok.bos_token_id] + tok.encode(c, add_bos=False) + [tok.eos_token_id] for c in captions]
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), tok.pad_token_id)
    labels = torch.full((len(rows), visual_tokens + width), -100)
    mask = torch.zeros((len(rows), visual_tokens + width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        labels[i, visual_tokens + 1 : visual_tokens + len(row)] = torch.tensor(row[1:])
        mask[i, : visual_tokens + len(row)] = 1
    visual = torch.randn(len(rows), visual_tokens, backend.hidden_size, generator=torch.Generator().manual_seed(seed))
    embeds = torch.cat([visual, backend.embed_tokens(ids).detach()], dim=1).requires_grad_(True)
    return embeds, mask, labels


CAPTIONS = ["a red circle in the top left", "a cat", "two dogs playing with a ball in the grass"]


def copy_dir(src, dst):
    shutil.copytree(src, dst)
    return dst


# --- loss -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_tokens", [0, 5])
def test_caption_loss_equals_full_logits_cross_entropy(tiny_dir, chunk_tokens):
    backend = build(tiny_dir, loss_chunk_tokens=chunk_tokens)
    embeds, mask, labels = stage2_batch(backend, CAPTIONS)
    ours = backend.caption_loss(embeds, mask, labels)
    (ours_grad,) = torch.autograd.grad(ours, embeds)
    logits = backend.model(inputs_embeds=embeds, attention_mask=mask).logits
    reference = F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)
    (reference_grad,) = torch.autograd.grad(reference, embeds)
    assert abs(ours.item() - reference.item()) <= 1e-5
    assert torch.allclose(ours_grad, reference_grad, atol=1e-6)


def counting(forward, calls):
    def wrapper(*args, **kwargs):
        calls.append(1)
        return forward(*args, **kwargs)

    return wrapper


def test_gradient_checkpointing_recomputes_layers_of_the_frozen_llm(tiny_dir):
    """transformers only checkpoints in training mode; a frozen LLM stays in eval mode."""
    from pgmm_core.components import freeze

    plain, checkpointed = build(tiny_dir), build(tiny_dir, grad_checkpointing=True)
    results = []
    for backend in (plain, checkpointed):
        freeze(backend)
        calls = []
        for layer in backend.model.model.layers:  # counts MLP runs, recomputations included
            layer.mlp.forward = counting(layer.mlp.forward, calls)
        embeds, mask, labels = stage2_batch(backend, CAPTIONS)
        loss = backend.caption_loss(embeds, mask, labels)
        loss.backward()
        results.append((loss.item(), embeds.grad, len(calls)))
    (loss_a, grad_a, calls_a), (loss_b, grad_b, calls_b) = results
    assert not checkpointed.model.training
    assert abs(loss_a - loss_b) <= 1e-6 and torch.allclose(grad_a, grad_b, atol=1e-6)
    assert calls_a == 2 and calls_b == 4  # two layers; each run again in the backward pass
    with torch.no_grad():  # and generation does not recompute anything
        checkpointed.caption_loss(*stage2_batch(checkpointed, CAPTIONS))


# --- dtypes ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bf16_dir(tiny_dir, tmp_path_factory):
    """The tiny checkpoint stored like the release: bf16 weights, fp32 rotary buffers."""
    directory = copy_dir(tiny_dir, tmp_path_factory.mktemp("bf16") / "pangu")
    for shard in directory.glob("model-*.safetensors"):
        tensors = load_file(str(shard))
        tensors = {k: v if k.endswith("inv_freq") else v.to(torch.bfloat16) for k, v in tensors.items()}
        save_file(tensors, str(shard), metadata={"format": "pt"})
    return directory


class Float32Allocations(TorchDispatchMode):
    """Records real (non-meta) float32 tensors of more than ``floor`` elements produced by any op."""

    def __init__(self, floor: int):
        super().__init__()
        self.floor, self.seen = floor, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.dtype == torch.float32 and not t.is_meta and t.numel() > self.floor:
                self.seen.append((str(func), tuple(t.shape)))
        return out


@pytest.mark.parametrize("dtype", [None, "bf16"])
def test_bf16_release_stays_bf16_end_to_end(bf16_dir, dtype):
    with Float32Allocations(floor=64) as probe:
        backend = build(bf16_dir, dtype=dtype)
    assert probe.seen == []  # no fp32 copy of any weight, not even transiently
    assert {p.dtype for p in backend.parameters()} == {torch.bfloat16}
    assert backend.follows_precision_policy is (dtype is None)
    embeds, mask, labels = stage2_batch(backend, CAPTIONS)
    hidden = backend.model.model(inputs_embeds=embeds.to(torch.bfloat16), attention_mask=mask).last_hidden_state
    assert hidden.dtype == torch.bfloat16
    loss = backend.caption_loss(embeds, mask, labels)
    loss.backward()
    assert torch.isfinite(loss) and embeds.grad.dtype == torch.float32  # the trained side keeps its dtype


def test_requested_dtype_converts(bf16_dir, tiny_dir):
    assert {p.dtype for p in build(bf16_dir, dtype="fp32").parameters()} == {torch.float32}
    assert {p.dtype for p in build(tiny_dir, dtype="fp16").parameters()} == {torch.float16}
    assert checkpoint.stored_dtype(bf16_dir) == torch.bfloat16 and checkpoint.stored_dtype(tiny_dir) == torch.float32


# --- errors ---------------------------------------------------------------------------------------


def test_missing_directory(tmp_path):
    with pytest.raises(CheckpointError, match="openPangu directory not found: .*nowhere.*download"):
        build(tmp_path / "nowhere")


def test_missing_tokenizer_model(tiny_dir, tmp_path):
    directory = copy_dir(tiny_dir, tmp_path / "pangu")
    (directory / "tokenizer.model").unlink()
    with pytest.raises(CheckpointError, match="tokenizer.model not found"):
        build(directory)


def test_unknown_model_type(tiny_dir, tmp_path):
    directory = copy_dir(tiny_dir, tmp_path / "pangu")
    config = json.loads((directory / "config.json").read_text())
    config["model_type"] = "qwen2"
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="model_type 'qwen2' is not openPangu-Embedded.*hf_causal_lm"):
        build(directory)


def test_weight_shape_mismatch_names_key_and_shapes(tiny_dir, tmp_path):
    directory = copy_dir(tiny_dir, tmp_path / "pangu")
    config = json.loads((directory / "config.json").read_text())
    config["intermediate_size"] = 96
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"shape mismatch for 'model\.layers\.\d\.mlp\.\w+_proj\.weight': "
                                              r"the checkpoint has \(\d+, \d+\), config\.json implies"):
        build(directory)


def test_missing_shard(tiny_dir, tmp_path):
    directory = copy_dir(tiny_dir, tmp_path / "pangu")
    (directory / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match="missing weight shard.*model-00002-of-00002"):
        build(directory)


def test_too_little_memory_is_refused_before_loading(tiny_dir, tmp_path, monkeypatch):
    directory = copy_dir(tiny_dir, tmp_path / "pangu")
    for shard in directory.glob("model-*.safetensors"):
        shard.write_bytes(b"not read: the estimate comes first")
    monkeypatch.setattr(checkpoint, "available_memory_bytes", lambda: 100_000)
    with pytest.raises(CheckpointError, match=r"needs about 0\.0 GiB of memory in fp32 but only 0\.0 GiB.*bf16"):
        build(directory, dtype="fp32")


def test_memory_estimate_of_the_release():
    release = json.loads((DATA / "release" / "config.json").read_text())
    assert checkpoint.parameter_count(release) * 2 / 1024**3 == pytest.approx(14.96, abs=0.01)


def test_tokenizer_of_another_model_is_refused(golden_model_dir, tmp_path):
    """The release's tokenizer (EOS 45892) with a 1000-token model."""
    directory = copy_dir(golden_model_dir, tmp_path / "pangu")
    shutil.copy(DATA / "release" / "tokenizer_config.json", directory / "tokenizer_config.json")
    with pytest.raises(CheckpointError, match="eos_token has id 45892, outside the model's vocabulary of 1000"):
        build(directory)
