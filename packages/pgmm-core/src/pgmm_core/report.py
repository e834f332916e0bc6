"""``python -m pgmm_core report``: one self-contained HTML page about a run.

The page shows the loss and learning-rate curves, the evaluation metrics over time and a gallery
of validation images with the generated and reference captions. Plots are also written as PNG files
next to it; images are embedded (base64), so the page can be mailed or archived on its own.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
from pathlib import Path
from typing import Any

from pgmm_core.errors import ConfigError
from pgmm_core.preprocessing import ImageSpec, denormalize, run_image_spec

logger = logging.getLogger(__name__)

# Panels of the metrics chart: CIDEr (0-10) gets its own axis, or it flattens the 0-1 scores.
METRIC_PANELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("scores (0-1)", ("Bleu_4", "METEOR", "ROUGE_L", "SPICE")),
    ("CIDEr", ("CIDEr",)),
)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _figure_png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def _plots(log: list[dict[str, Any]], metrics: list[dict[str, Any]]) -> dict[str, bytes]:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    pngs: dict[str, bytes] = {}
    steps = [r["step"] for r in log]
    for key, title in (("loss", "training loss"), ("lr", "learning rate")):
        fig, ax = plt.subplots(figsize=(6, 3.2))
        ax.plot(steps, [r.get(key) for r in log], color="#1f5fa8" if key == "loss" else "#b25d12")
        ax.set_xlabel("step")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        pngs[key] = _figure_png(fig)
        plt.close(fig)
    if metrics:
        fig = metrics_figure(metrics)
        pngs["metrics"] = _figure_png(fig)
        plt.close(fig)
    return pngs


def metrics_figure(metrics: list[dict[str, Any]]) -> Any:
    """Validation metrics over steps, one panel per scale of :data:`METRIC_PANELS` that has data."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    panels = [(title, [(name, [(m["step"], m[name]) for m in metrics if name in m]) for name in names])
              for title, names in METRIC_PANELS]
    panels = [(title, [(name, points) for name, points in series if points]) for title, series in panels]
    panels = [(title, series) for title, series in panels if series]
    fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(9, 3.2), squeeze=False)
    for ax, (title, series) in zip(axes[0], panels):
        for name, points in series:
            ax.plot(*zip(*points), marker="o", label=name)
        ax.set_xlabel("step")
        ax.set_title(f"validation: {title}")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _thumbnail(pixels: Any, spec: ImageSpec) -> bytes:
    """A preprocessed image tensor back to PNG bytes (de-normalised with the run's statistics)."""
    from torchvision.transforms.functional import to_pil_image

    image = to_pil_image(denormalize(pixels, spec))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _gallery(run_dir: Path, config: Any, results: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """The first ``count`` validation images with their generated and reference captions."""
    if not results or not config.data.val:
        return []
    captions = {r["image_id"]: r["caption"] for r in results}
    spec = run_image_spec(run_dir, config)
    dataset = config.host.build("dataset", config.data.val[0], split="val", image_spec=spec, image_size=spec.size)
    samples = []
    for index in range(min(len(dataset), count * 2)):
        item = dataset[index]
        if "bad" in item or item["image_id"] not in captions:
            continue
        samples.append({"image": _thumbnail(item["image"], spec), "image_id": item["image_id"],
                        "generated": captions[item["image_id"]], "references": item["references"]})
        if len(samples) == count:
            break
    logger.info("report gallery: %d image(s) preprocessed with %s", len(samples), spec)
    return samples


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def build_report(run_dir: str | Path, *, out_dir: str | Path | None = None, gallery_size: int = 12,
                 host: Any | None = None) -> Path:
    """Write ``report/index.html`` (and ``loss.png``, ``lr.png``, ``metrics.png``); return its path."""
    from pgmm_core.config.loading import load_config

    from pgmm_core.run_dir import RunDirectory

    run_dir = Path(run_dir)
    layout = RunDirectory(run_dir)
    if not layout.is_run():
        raise ConfigError([f"{run_dir} is not a pgmm run directory (no {layout.CONFIG})"])
    config = load_config(layout.config, host=host)
    log = [r for r in _read_jsonl(layout.log) if "loss" in r]
    metrics = layout.metrics_history()
    results = layout.read_json(layout.results, [])
    out = Path(out_dir) if out_dir else layout.report
    out.mkdir(parents=True, exist_ok=True)
    pngs = _plots(log, metrics)
    for name, png in pngs.items():
        (out / f"{name}.png").write_bytes(png)
    samples = _gallery(run_dir, config, results, gallery_size)
    page = render_html(run_dir, log, metrics, pngs, samples)
    target = out / "index.html"
    target.write_text(page, encoding="utf-8")
    return target


def render_html(run_dir: Path, log: list[dict[str, Any]], metrics: list[dict[str, Any]],
                pngs: dict[str, bytes], samples: list[dict[str, Any]]) -> str:
    esc = html.escape
    latest = metrics[-1] if metrics else {}
    rows = "".join(
        f"<tr><td>{esc(name)}</td><td>{latest[name]:.4f}</td></tr>"
        for name in ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr", "SPICE") if name in latest
    )
    plots = "".join(
        f'<figure class="plot"><img alt="{esc(name)}" src="{_data_uri(png)}"><figcaption>{esc(name)}</figcaption></figure>'
        for name, png in pngs.items()
    )
    cards = "".join(
        '<figure class="sample">'
        f'<img alt="image {esc(str(s["image_id"]))}" src="{_data_uri(s["image"])}">'
        f'<figcaption><p class="generated">{esc(s["generated"])}</p>'
        + "".join(f'<p class="reference">{esc(r)}</p>' for r in s["references"][:3])
        + "</figcaption></figure>"
        for s in samples
    )
    summary = (f"{len(log)} logged steps, last step {log[-1]['step']}, last loss {log[-1]['loss']:.4f}"
               if log else "no training log yet")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>pgmm report: {esc(run_dir.name)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 24px; color: #222; background: #fafafa; }}
h1 {{ font-size: 22px; }} h2 {{ font-size: 17px; margin-top: 28px; }}
.plots {{ display: flex; flex-wrap: wrap; gap: 16px; }}
.plot img {{ width: 420px; background: white; border: 1px solid #ddd; }}
.gallery {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(200px, 1fr)); gap: 14px; }}
.sample {{ margin: 0; background: white; border: 1px solid #ddd; padding: 8px; }}
.sample img {{ width: 100%; image-rendering: pixelated; }}
.generated {{ font-weight: 600; color: #1f5fa8; margin: 6px 0 4px; }}
.reference {{ color: #555; font-size: 13px; margin: 2px 0; }}
table {{ border-collapse: collapse; }} td {{ border: 1px solid #ddd; padding: 3px 10px; }}
</style></head><body>
<h1>pgmm run <code>{esc(str(run_dir))}</code></h1>
<p>{esc(summary)}</p>
<h2>Latest validation metrics{f" (step {latest['step']})" if latest else ""}</h2>
<table>{rows or "<tr><td>no evaluation yet</td></tr>"}</table>
<h2>Curves</h2><div class="plots">{plots}</div>
<h2>Validation samples: generated (blue) and references</h2>
<div class="gallery">{cards or "<p>no validation results yet</p>"}</div>
</body></html>
"""
