"""Parity of pgmm's vision front end with LAVIS' BLIP-2 code, checked against stored golden tensors.

The goldens (``packages/pgmm-vision/tests/data``, see its README) were produced by LAVIS' own
``eva_vit.py`` and ``Qformer.py`` in fp32 on CPU. Three cases:

* ``small``: a 3-block 64-wide EVA and a 4-layer Q-Former; weights in a real LAVIS-format
  ``small_blip2.pth`` that pgmm loads through its checkpoint loaders (also at 84 px, which resamples
  ``pos_embed``). Runs in CI.
* ``full_width``: EVA-ViT-g width (1408, 16 heads, MLP 6144) with 2 blocks, bert-base Q-Former.
* ``full_depth39``: the real EVA-ViT-g (39 blocks) + Q-Former, ~1.17 B parameters.
* ``stage1_small``, ``stage1_full``: the stage-1 losses (ITC, ITM, ITG) and their gradients against
  LAVIS' ``Blip2Qformer.forward`` (:mod:`pgmm_vision.stage1.parity`).

The full cases store only outputs: their weights are regenerated here from per-key seeds (the
recipe of the goldens' README) and copied in under pgmm's names via :mod:`pgmm_vision.keymap`.
Outputs come from :meth:`pgmm_core.model.MultimodalModel.encode_image`, i.e. pgmm's tower,
``ln_vision`` and Q-Former exactly as training uses them.

    python -m pgmm_vision.parity                    # small + full_width
    python -m pgmm_vision.parity --case full_depth39  # ~6 GB RAM, about a minute on 2 cores
    python -m pgmm_vision.parity --case stage1_full   # stage-1 losses at full size
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

CASES = ("small", "full_width", "full_depth39", "stage1_small", "stage1_full")
ATOL = 1e-4


def default_data_dir() -> Path:
    """``packages/pgmm-vision/tests/data`` of a source checkout (the goldens are not in the wheel)."""
    return Path(__file__).resolve().parents[2] / "tests" / "data"


def read_case(name: str, data_dir: Path | None = None) -> dict:
    data_dir = Path(data_dir or default_data_dir())
    path = data_dir / f"{name}_case.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the goldens live in a source checkout of pgmm "
                                "(packages/pgmm-vision/tests/data); pass --data DIR")
    meta = json.loads(path.read_text(encoding="utf-8"))
    meta["data_dir"] = str(data_dir)
    return meta


def component_configs(meta: dict, image_size: int | None = None, checkpoint: str | None = None
                      ) -> tuple[dict, dict]:
    """pgmm configs (``eva_vit_g``, ``qformer``) of the LAVIS modules a case was generated with."""
    vit, q = meta["vit"], meta["qformer"]
    vision = {"type": "eva_vit_g", "image_size": image_size or vit["img_size"], "patch_size": vit["patch_size"],
              "embed_dim": vit["embed_dim"], "depth": vit["depth"], "num_heads": vit["num_heads"],
              "mlp_dim": int(vit["embed_dim"] * vit["mlp_ratio"]), "checkpoint": checkpoint}
    connector = {"type": "qformer", "num_query_tokens": meta["num_query_token"], "hidden_size": q["hidden_size"],
                 "num_layers": q["num_layers"], "num_heads": q["num_heads"],
                 "intermediate_size": q["intermediate_size"], "cross_attention_freq": meta["cross_attention_freq"],
                 "checkpoint": checkpoint}
    return vision, connector


def build_front_end(meta: dict, *, image_size: int | None = None, checkpoint: str | None = None, host=None):
    """A :class:`MultimodalModel` holding pgmm's tower, ln_vision and Q-Former for this case, built
    through the registered factories (no projector, no LLM: ``encode_image`` does not need them)."""
    from pgmm_core import MultimodalModel
    from pgmm_core.plugins import PluginHost

    host = host or PluginHost(environ={})
    vision_cfg, connector_cfg = component_configs(meta, image_size, checkpoint)

    def build(kind: str, data: dict, **context):
        spec = host.registry(kind).get(data["type"])
        return spec.build(spec.config_model(**data), **context)

    vision = build("vision", vision_cfg)
    connector = build("connector", connector_cfg, encoder_width=vision.out_features)
    model = MultimodalModel(vision, connector, nn.Identity(), nn.Module())
    norm = connector.pretrained_vision_norm()
    if norm:
        model.ln_vision.load_state_dict(norm)
    return model.eval()


def recipe_tensor(name: str, shape: list[int], seed: int) -> torch.Tensor:
    """The goldens' deterministic weight for one LAVIS key (README of the goldens)."""
    t = torch.randn(tuple(shape), generator=torch.Generator().manual_seed(seed), dtype=torch.float32)
    last = name.split(".")[-1]
    if last in ("pos_embed", "cls_token", "query_tokens"):
        return 0.1 * t
    if len(shape) == 0:
        return 0.07 + 0.01 * t
    if len(shape) == 1 and last == "weight":
        return 1.0 + 0.1 * t
    if len(shape) == 1:
        return 0.1 * t
    return 0.02 * t


def load_seeded_weights(model: nn.Module, meta: dict) -> int:
    """Regenerate the case's LAVIS weights key by key and copy those ``model`` has into it (the
    stage-1 text side only when its connector has one).

    The seed of a key is ``base_seed + its index in the sorted full LAVIS key list`` (text-path keys
    included). Returns the number of parameters set.
    """
    from pgmm_vision.keymap import lavis_key_to_pgmm

    own = model.state_dict()
    wanted = {k for k in own if k.startswith(("vision.", "ln_vision.", "connector."))}
    done: set[str] = set()
    count = 0
    with torch.no_grad():
        for index, (key, shape, first) in enumerate(meta["params"]):
            target = lavis_key_to_pgmm(key)
            if target is None or target not in own:  # e.g. the text side of a stage-2 model
                continue
            value = recipe_tensor(key, shape, meta["base_seed"] + index)
            if abs(value.reshape(-1)[0].item() - first) > 1e-6:
                raise AssertionError(f"recipe mismatch for {key}: {value.reshape(-1)[0].item()} != {first}")
            own[target].copy_(value)
            done.add(target)
            count += value.numel()
    missing = sorted(wanted - done)
    if missing:
        raise AssertionError(f"no golden weights for {missing[:5]}")
    return count


def _pixels(shape: list[int], seed: int) -> torch.Tensor:
    return torch.randn(tuple(shape), generator=torch.Generator().manual_seed(seed))


def _stats(x: torch.Tensor) -> list[float]:
    x = x.double()
    return [x.sum().item(), x.mean().item(), x.abs().mean().item(), x.std().item(), x.min().item(), x.max().item()]


@dataclass
class CaseResult:
    case: str
    errors: dict[str, float] = field(default_factory=dict)  # output -> max abs error vs LAVIS
    atol: float = ATOL
    seconds: float = 0.0
    peak_rss_gib: float = 0.0

    @property
    def passed(self) -> bool:
        return all(err <= self.atol for err in self.errors.values())

    @property
    def worst(self) -> float:
        return max(self.errors.values())

    def summary(self) -> str:
        lines = [f"{self.case}: {'PASS' if self.passed else 'FAIL'} (max abs error {self.worst:.2e}, "
                 f"tolerance {self.atol:g}; {self.seconds:.1f} s, peak RSS {self.peak_rss_gib:.2f} GiB)"]
        lines += [f"  {name:<28} {err:.2e}" for name, err in self.errors.items()]
        return "\n".join(lines)


def _err(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.shape != b.shape:
        raise AssertionError(f"shape {tuple(a.shape)} != golden {tuple(b.shape)}")
    return (a.float() - b.float()).abs().max().item()


def run_small(data_dir: Path | None = None, atol: float = ATOL) -> CaseResult:
    """Small case through the real file loaders: ``small_blip2.pth`` as the tower's and the
    Q-Former's checkpoint, at 56 px and at 84 px (pos_embed resampled)."""
    from safetensors.torch import load_file

    start = time.perf_counter()
    meta = read_case("small", data_dir)
    root = Path(meta["data_dir"])
    io = load_file(str(root / "small_io.safetensors"))
    checkpoint = str(root / "small_blip2.pth")
    result = CaseResult("small", atol=atol)
    for size, suffix in ((meta["vit"]["img_size"], ""), (84, "_84")):
        model = build_front_end(meta, image_size=size, checkpoint=checkpoint)
        if suffix:
            result.errors["pos_embed_84"] = _err(model.vision.model.pos_embed, io["pos_embed_84"])
        pixels = io[f"pixel_values{suffix}"]
        with torch.no_grad():
            encoding = model.encode_image(pixels)
            tower = model.vision(pixels)
        result.errors[f"vision_out{suffix}"] = _err(tower, io[f"vision_out{suffix}"])
        result.errors[f"vision_embeds{suffix}"] = _err(encoding.vision_embeds, io[f"vision_embeds{suffix}"])
        result.errors[f"query_output{suffix}"] = _err(encoding.query_embeds, io[f"query_output{suffix}"])
    result.seconds = time.perf_counter() - start
    result.peak_rss_gib = _peak_rss_gib()
    return result


def run_full(case: str, data_dir: Path | None = None, atol: float = ATOL) -> CaseResult:
    """A full-width case: seeded weights, one 224 px image, outputs vs the stored slices and stats."""
    from safetensors.torch import load_file

    start = time.perf_counter()
    meta = read_case(case, data_dir)
    io = load_file(str(Path(meta["data_dir"]) / f"{case}_io.safetensors"))
    model = build_front_end(meta)
    load_seeded_weights(model, meta)
    pixels = _pixels(meta["pixel_shape"], meta["pixel_seed"])
    result = CaseResult(case, atol=atol)
    result.errors["pixel_values_first16"] = _err(pixels[0, 0, 0, :16], io["pixel_values_first16"])
    with torch.no_grad():
        tower = model.vision(pixels)
        encoding = model.encode_image(pixels)
    result.errors["vision_out_first8"] = _err(tower[:, :8], io["vision_out_first8"])
    result.errors["vision_embeds_first8"] = _err(encoding.vision_embeds[:, :8], io["vision_embeds_first8"])
    result.errors["vision_embeds_last8"] = _err(encoding.vision_embeds[:, -8:], io["vision_embeds_last8"])
    result.errors["query_output"] = _err(encoding.query_embeds, io["query_output"])
    # whole-tensor statistics (mean, abs mean, std, min, max; the sum is a mean times ~360k)
    for name, value in (("vision_out", tower), ("vision_embeds", encoding.vision_embeds),
                        ("query_output", encoding.query_embeds)):
        mine, ref = _stats(value)[1:], io[f"{name}_stats"].tolist()[1:]
        result.errors[f"{name}_stats"] = max(abs(a - b) for a, b in zip(mine, ref))
    result.seconds = time.perf_counter() - start
    result.peak_rss_gib = _peak_rss_gib()
    return result


def run_case(case: str, data_dir: Path | None = None, atol: float = ATOL) -> CaseResult:
    if case.startswith("stage1_"):  # the stage-1 losses and gradients (pgmm_vision.stage1.parity)
        from pgmm_vision.stage1 import parity as stage1

        if case == "stage1_small":
            return stage1.run_stage1_small(data_dir, min(atol, stage1.SMALL_ATOL))
        return stage1.run_stage1_full(data_dir, atol)
    return run_small(data_dir, atol) if case == "small" else run_full(case, data_dir, atol)


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pgmm_vision.parity", description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", choices=(*CASES, "all"), action="append",
                        help="case to run (repeatable; default: small and full_width)")
    parser.add_argument("--data", type=Path, default=None, help="golden directory (default: the source tree's)")
    parser.add_argument("--atol", type=float, default=ATOL)
    args = parser.parse_args(argv)
    cases = args.case or ["small", "full_width"]
    cases = list(CASES) if "all" in cases else cases
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, fp32 on CPU", flush=True)
    ok = True
    for case in cases:
        try:
            result = run_case(case, args.data, args.atol)  # in order; peak RSS is the process's so far
        except FileNotFoundError as exc:
            print(f"pgmm_vision.parity: {exc}", file=sys.stderr)
            return 2
        print(result.summary(), flush=True)
        ok &= result.passed
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
