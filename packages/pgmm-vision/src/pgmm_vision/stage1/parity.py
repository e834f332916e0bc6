"""Parity of the stage-1 losses with LAVIS' ``Blip2Qformer.forward``, against stored golden tensors.

The goldens (``packages/pgmm-vision/tests/data/stage1_*``, made by LAVIS' own code; see the README
there) hold ITC, ITM and ITG losses, the ITM sampling distributions, the negative indices LAVIS
drew, and gradients of chosen parameters (and of the tower's output) for each loss separately.
LAVIS ran without its ViT: its ``image`` was a precomputed tower output, so here the tower is
:class:`FeatureTower` (returns its input) and everything after it — ``ln_vision``, the Q-Former's
three passes, the heads, the losses — is pgmm's.

* ``stage1_small``: the small case's weights (``small_blip2.pth``: 4-layer Q-Former, 48 wide), a
  99-token BERT vocabulary, 4 pairs (the third caption longer than the 16-token limit), with and
  without image ids; through :class:`~pgmm_vision.stage1.objective.QFormerPretrainObjective` itself.
* ``stage1_full``: EVA-ViT-g width (1408, 257 tokens), 12-layer bert-base Q-Former, 32 queries,
  4 pairs, weights regenerated from seeds (``full_width_case.json``'s key list); ~20 s on 2 cores.

    python -m pgmm_vision.parity --case stage1_small --case stage1_full
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

SMALL_ATOL = 1e-5
FULL_ATOL = 1e-4
LOSSES = ("itc", "itm", "itg")


class FeatureTower(nn.Module):
    """A "tower" whose output is its input: the goldens start from a precomputed tower output."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.out_features = width
        self.frozen = False

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def _data_dir(data_dir: Path | None) -> Path:
    from pgmm_vision.parity import default_data_dir

    return Path(data_dir or default_data_dir())


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the goldens live in a source checkout of pgmm "
                                "(packages/pgmm-vision/tests/data); pass --data DIR")
    return json.loads(path.read_text(encoding="utf-8"))


def connector_config(**fields: Any) -> Any:
    """A ``qformer`` config with these fields, unvalidated: the goldens' tokenizer directory holds
    only ``vocab.txt`` and their weights are LAVIS tensors copied in after building."""
    from pgmm_vision.configs import QFormerConfig

    return QFormerConfig.model_construct(**fields)


def build_model(tokenizer_dir: Path, width: int, **sizes: Any) -> Any:
    """A :class:`~pgmm_core.model.MultimodalModel` of :class:`FeatureTower`, ``ln_vision`` and the
    Q-Former with its text side, in eval mode (dropout off, as the goldens)."""
    from pgmm_core import MultimodalModel
    from pgmm_vision.stage1.text_side import QFormerWithTextSide
    from pgmm_vision.stage1.tokenizer import load_tokenizer

    config = connector_config(type="qformer", text_side=True, **sizes)
    connector = QFormerWithTextSide(config, width, load_tokenizer(tokenizer_dir))
    return MultimodalModel(FeatureTower(width), connector, None, None).eval()


def load_lavis_tensors(model: nn.Module, tensors: Iterable[tuple[str, torch.Tensor]]) -> int:
    """Copy LAVIS-named tensors into ``model`` under pgmm's names (:mod:`pgmm_vision.keymap`); the
    tower's keys and LAVIS' ``position_ids`` buffer are skipped. Every parameter must be set."""
    from pgmm_vision.keymap import lavis_key_to_pgmm

    own = model.state_dict()
    done: set[str] = set()
    with torch.no_grad():
        for key, value in tensors:
            target = lavis_key_to_pgmm(key)
            if target is None or target.startswith("vision.") or key.endswith("position_ids"):
                continue
            own[target].copy_(value)
            done.add(target)
    names = {name for name, _ in model.named_parameters()}
    missing = sorted(names - done)
    if missing:
        raise AssertionError(f"no golden weights for {missing[:5]}")
    return len(done)


def _err(a: torch.Tensor, b: torch.Tensor) -> float:
    a = a.detach().float().reshape(b.shape) if a.numel() == b.numel() else a
    if a.shape != b.shape:
        raise AssertionError(f"shape {tuple(a.shape)} != golden {tuple(b.shape)}")
    return (a.float() - b.float()).abs().max().item()


def _grads(loss: torch.Tensor, named: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    values = torch.autograd.grad(loss, list(named.values()), retain_graph=True, allow_unused=True)
    return {k: torch.zeros_like(p) if g is None else g for (k, p), g in zip(named.items(), values)}


def lavis_parameters(model: nn.Module, chosen: list[str]) -> dict[str, torch.Tensor]:
    from pgmm_vision.keymap import lavis_key_to_pgmm

    params = dict(model.named_parameters())
    return {key: params[lavis_key_to_pgmm(key)] for key in chosen}


# --- the small case, through the objective ---------------------------------------------------------

def small_model(data_dir: Path | None = None) -> tuple[Any, dict[str, Any]]:
    from pgmm_vision.parity import read_case

    root = _data_dir(data_dir)
    meta = _read(root / "stage1_small_case.json")
    base = read_case("small", root)
    q = base["qformer"]
    model = build_model(root / "stage1_small_bert", base["vit"]["embed_dim"], num_query_tokens=base["num_query_token"],
                        hidden_size=q["hidden_size"], num_layers=q["num_layers"], num_heads=q["num_heads"],
                        intermediate_size=q["intermediate_size"], cross_attention_freq=base["cross_attention_freq"],
                        max_text_len=meta["max_txt_len"], embed_dim=meta["embed_dim"], max_position_embeddings=32)
    state = torch.load(str(root / "small_blip2.pth"), map_location="cpu", weights_only=True)["model"]
    load_lavis_tensors(model, state.items())
    return model, meta


def forced(negatives: Any) -> Any:
    """An ITM sampler that returns the given negatives (LAVIS' recorded draws)."""
    return lambda weights_t2i, weights_i2t: negatives


def run_stage1_small(data_dir: Path | None = None, atol: float = SMALL_ATOL) -> Any:
    """Both variants (image ids / none), each loss alone (weight 1, others 0) through the objective."""
    from safetensors.torch import load_file

    from pgmm_vision.parity import CaseResult, _peak_rss_gib

    start = time.perf_counter()
    model, meta = small_model(data_dir)
    io = load_file(str(_data_dir(data_dir) / "stage1_small_io.safetensors"))
    result = CaseResult("stage1_small", atol=atol)
    tokens = model.connector.tokenize(meta["captions"])
    result.errors["input_ids"] = float((tokens.input_ids != io["input_ids"]).sum())
    result.errors["attention_mask"] = float((tokens.attention_mask != io["attention_mask"]).sum())
    result.errors["truncated_count"] = float(abs(tokens.truncated - sum(
        n > meta["max_txt_len"] for n in meta["untruncated_lengths"])))
    everything = range(len(meta["captions"]))
    for variant in ("imgid", "noid"):
        result.errors.update(objective_errors(model, meta, io, f"{variant}.", everything, variant == "imgid"))
        result.errors[f"{variant}.itm_weights"] = _itm_weights_error(model, io, meta, variant)
    result.seconds = time.perf_counter() - start
    result.peak_rss_gib = _peak_rss_gib()
    return result


def objective_errors(model: Any, meta: dict[str, Any], io: dict[str, torch.Tensor], prefix: str, rows: Iterable[int],
                     by_image_id: bool, collectives: Any = None) -> dict[str, float]:
    """Max abs errors of each loss and its gradients (each loss alone: weight 1, the others 0) for
    the pairs ``rows`` of the small case, through the objective with LAVIS' negatives (``prefix``:
    the goldens' key prefix, e.g. ``imgid.`` or ``rank1.``)."""
    from pgmm_vision.stage1.configs import QFormerPretrainConfig
    from pgmm_vision.stage1.losses import Negatives
    from pgmm_vision.stage1.objective import QFormerPretrainObjective, collate_pairs

    rows = list(rows)
    params = lavis_parameters(model, meta["chosen"])
    features = io["vision_out"][rows].clone().requires_grad_(True)
    batch = collate_pairs([{"image": features[i], "image_id": meta["image_ids"][row], "caption": meta["captions"][row]}
                     for i, row in enumerate(rows)])
    batch.images = features  # keep the graph to the tower's output (collate stacks copies)
    negatives = Negatives(io[f"{prefix}neg_image_idx"], io[f"{prefix}neg_text_idx"])
    errors: dict[str, float] = {}
    for name in LOSSES:
        weights = {loss: float(loss == name) for loss in LOSSES}
        objective = QFormerPretrainObjective(QFormerPretrainConfig(same_image_by_id=by_image_id, **weights))
        objective.sampler = forced(negatives)
        objective.collectives = collectives
        output = objective.loss(model, batch)
        errors[f"{prefix}loss_{name}"] = abs(output.parts[name] - io[f"{prefix}loss_{name}"].item())
        grads = _grads(output.loss, {**params, "vision_out": features})
        errors[f"{prefix}grad_{name}"] = max(_err(g, io[f"{prefix}grad_{name}.{key}"]) for key, g in grads.items())
    return errors


def run_stage1_rank(collectives: Any, data_dir: Path | None = None) -> dict[str, float]:
    """This rank's errors against LAVIS run on two ranks (``stage1_small_2rank_io``): the small case's
    4 pairs split 2 + 2, image ids used, LAVIS' per-rank negatives. Call on every rank of a
    2-process group; ``collectives``: the backend's."""
    from safetensors.torch import load_file

    from pgmm_core.devices.collectives import rank, world_size

    if world_size() != 2:
        raise ValueError(f"the two-rank goldens need 2 ranks, not {world_size()}")
    model, meta = small_model(data_dir)
    io = load_file(str(_data_dir(data_dir) / "stage1_small_2rank_io.safetensors"))
    io["vision_out"] = load_file(str(_data_dir(data_dir) / "stage1_small_io.safetensors"))["vision_out"]
    per_rank = len(meta["captions"]) // 2
    rows = range(rank() * per_rank, (rank() + 1) * per_rank)
    return objective_errors(model, meta, io, f"rank{rank()}.", rows, True, collectives)


def _itm_weights_error(model: Any, io: dict[str, torch.Tensor], meta: dict[str, Any], variant: str) -> float:
    """pgmm's hard-negative distributions against LAVIS' (same-image pairs at exactly zero)."""
    from pgmm_vision.stage1.gather import GlobalBatch
    from pgmm_vision.stage1.losses import Negatives, stage1_losses

    pairs = GlobalBatch(len(meta["captions"]))
    keys = pairs.image_keys(meta["image_ids"], torch.device("cpu")) if variant == "imgid" else None
    with torch.no_grad():
        vision_embeds = model.encode_image(io["vision_out"]).vision_embeds
        out = stage1_losses(model.connector, vision_embeds, io["input_ids"], io["attention_mask"], pairs, keys,
                            negatives=Negatives(io[f"{variant}.neg_image_idx"], io[f"{variant}.neg_text_idx"]))
    zeros_match = torch.equal(out.weights_t2i == 0, io[f"{variant}.weights_t2i"] == 0)
    error = max(_err(out.weights_t2i, io[f"{variant}.weights_t2i"]),
                _err(out.weights_i2t, io[f"{variant}.weights_i2t"]))
    return error if zeros_match else float("inf")


# --- the full-size case -----------------------------------------------------------------------------

def synthetic_bert_vocab(directory: Path, size: int = 30522) -> Path:
    """A ``vocab.txt`` with bert-base-uncased's size and special-token ids ([PAD] 0, [UNK] 100,
    [CLS] 101, [SEP] 102, [MASK] 103), so ``[DEC]`` becomes 30522 as in LAVIS; words are placeholders
    (the full case feeds token ids, not text)."""
    special = {0: "[PAD]", 100: "[UNK]", 101: "[CLS]", 102: "[SEP]", 103: "[MASK]"}
    words = [special.get(i, f"[unused{i}]" if i < 1000 else f"w{i}") for i in range(size)]
    (directory / "vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    return directory


def full_model(data_dir: Path | None = None) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    from pgmm_vision.parity import read_case, recipe_tensor

    root = _data_dir(data_dir)
    meta = _read(root / "stage1_full_case.json")
    base = read_case("full_width", root)
    q = base["qformer"]
    with tempfile.TemporaryDirectory(prefix="pgmm-bert-vocab-") as tmp:
        model = build_model(synthetic_bert_vocab(Path(tmp)), base["vit"]["embed_dim"],
                            num_query_tokens=base["num_query_token"], hidden_size=q["hidden_size"],
                            num_layers=q["num_layers"], num_heads=q["num_heads"],
                            intermediate_size=q["intermediate_size"], cross_attention_freq=base["cross_attention_freq"],
                            max_text_len=meta["max_txt_len"], embed_dim=256, max_position_embeddings=512)
    tensors = ((key, recipe_tensor(key, shape, base["base_seed"] + index))
               for index, (key, shape, _) in enumerate(base["params"]) if not key.startswith("visual_encoder."))
    load_lavis_tensors(model, tensors)
    return model, meta, base


def run_stage1_full(data_dir: Path | None = None, atol: float = FULL_ATOL) -> Any:
    """One pass of :func:`~pgmm_vision.stage1.losses.stage1_losses` with LAVIS' negatives; each loss's
    gradients against the stored slices, rows and whole-tensor statistics."""
    from safetensors.torch import load_file

    from pgmm_vision.parity import CaseResult, _peak_rss_gib, _stats
    from pgmm_vision.stage1.gather import GlobalBatch
    from pgmm_vision.stage1.losses import Negatives, stage1_losses

    start = time.perf_counter()
    model, meta, _ = full_model(data_dir)
    io = load_file(str(_data_dir(data_dir) / "stage1_full_io.safetensors"))
    shape = (meta["batch"], meta["tokens"], meta["width"])
    features = torch.randn(shape, generator=torch.Generator().manual_seed(meta["feature_seed"])).requires_grad_(True)
    result = CaseResult("stage1_full", atol=atol)
    result.errors["vision_out_first8"] = _err(features[0, :8, :8], io["vision_out_first8"])
    pairs = GlobalBatch(meta["batch"])
    keys = pairs.image_keys(meta["image_ids"], torch.device("cpu"))
    vision_embeds = model.encode_image(features).vision_embeds
    out = stage1_losses(model.connector, vision_embeds, io["input_ids"], io["attention_mask"], pairs, keys,
                        negatives=Negatives(io["neg_image_idx"], io["neg_text_idx"]))
    result.errors["itm_weights"] = max(_err(out.weights_t2i, io["weights_t2i"]),
                                       _err(out.weights_i2t, io["weights_i2t"]))
    params = {**lavis_parameters(model, meta["chosen"]), "vision_out": features}
    rows = io["word_rows"]
    for name in LOSSES:
        result.errors[f"loss_{name}"] = abs(getattr(out, name).item() - io[f"loss_{name}"].item())
        worst = 0.0
        for key, grad in _grads(getattr(out, name), params).items():
            prefix = f"grad_{name}.{key}"
            if grad.numel() > 1:  # mean, abs mean, std, min, max (not the sum)
                stats = io[f"{prefix}_stats"].tolist()[1:]
                worst = max(worst, max(abs(a - b) for a, b in zip(_stats(grad)[1:], stats)))
            for suffix, part in (("", lambda g: g), ("_rows", lambda g: g[rows]), ("_first4", lambda g: g[:4]),
                                 ("_first64", lambda g: g[:64]), ("_first8", lambda g: g[0, :8, :8])):
                if prefix + suffix in io:
                    worst = max(worst, _err(part(grad), io[prefix + suffix]))
        result.errors[f"grad_{name}"] = worst
    result.seconds = time.perf_counter() - start
    result.peak_rss_gib = _peak_rss_gib()
    return result
