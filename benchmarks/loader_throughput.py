"""Loader throughput per worker: WebDataset shards vs loose JPEG files vs torchvision ImageFolder, same run.

    python benchmarks/loader_throughput.py [--images 1500] [--rounds 3] [--samples-per-shard 250] [--size 224]

Data: scikit-image's sample photographs resized to COCO's 640x480, JPEG quality 90, written once as
loose files with a ``jsonl_captions`` file, once as shards by ``python -m pgmm_core data shard``
(the same JPEG bytes inside tars), and linked into an ``ImageFolder`` tree.

Variants, each timed over one epoch in its own fresh process with one torch thread (= one DataLoader
worker's work; ``--workers N`` runs N worker processes instead), batch 32, decode + LAVIS train
transform at ``--size`` (RandomResizedCrop(scale 0.5-1, bicubic) + flip + ToTensor + Normalize):

* ``shards, tarfile``: an ``IterableDataset`` streaming the tars with :mod:`tarfile` (sequential
  reads, no file opens per sample), pgmm's ``blip2_image_train`` and ``blip_caption``;
* ``shards, webdataset``: the ``webdataset`` library's pipeline (``decode("pil")``) with the same transforms;
* ``loose files, pgmm``: ``jsonl_captions`` through ``SeededItems`` in ``ResumableSampler``'s shuffled
  order (one open + read per sample, random order): what training reads today;
* ``ImageFolder``: ``torchvision.datasets.ImageFolder`` + ``DataLoader(shuffle=True)`` with plain
  torchvision transforms: the baseline;
* ``read only``: the bytes alone (tar members in order; loose files opened and read in a shuffled
  order), to separate what the storage costs from what decoding and the transform cost.

Each variant is timed with a **warm** page cache (files read just before) and a **cold** one: every
data file is dropped from the page cache with ``posix_fadvise(POSIX_FADV_DONTNEED)`` (no root
needed) right before the child starts. Reported: images per wall-second and per CPU-second of the
process (median over rounds), and from ``benchmarks/results/scaling.json`` the loader workers one
910B needs to feed the full-size step.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
VARIANTS = ("shards_tarfile", "shards_webdataset", "loose_pgmm", "imagefolder", "read_shards", "read_loose")
LABELS = {
    "read_shards": "read only: tar members in order, no decode",
    "read_loose": "read only: loose files in shuffled order, no decode",
    "shards_tarfile": "shards, tarfile reader (pgmm transforms)",
    "shards_webdataset": "shards, webdataset library (pgmm transforms)",
    "loose_pgmm": "loose files, pgmm jsonl_captions",
    "imagefolder": "loose files, torchvision ImageFolder",
}
RESULTS = Path(__file__).resolve().parent / "results"


# --- the loaders (child process) -----------------------------------------------------------------


def _tar_samples(paths: list[str]):
    """(key, {ext: bytes}) for every sample of the tars, in order."""
    import tarfile

    for path in paths:
        with tarfile.open(path, mode="r|") as tar:
            key, members = None, {}
            for info in tar:
                stem, _, ext = info.name.partition(".")
                if stem != key and key is not None:
                    yield key, members
                    members = {}
                key = stem
                members[ext] = tar.extractfile(info).read()
            if key is not None:
                yield key, members


def build_loader(variant: str, root: Path, size: int, workers: int):
    import torch
    from pgmm_core.data import collate
    from torch.utils.data import DataLoader, IterableDataset

    shards = sorted(str(p) for p in (root / "shards").glob("*.tar"))
    if variant == "shards_tarfile":
        from pgmm_data.processors import blip2_image_train, blip_caption

        transform = blip2_image_train(size)

        class Shards(IterableDataset):
            def __iter__(self):
                import io

                from pgmm_core.images import to_rgb
                from PIL import Image

                info = torch.utils.data.get_worker_info()
                mine = shards if info is None else shards[info.id::info.num_workers]
                for key, members in _tar_samples(mine):
                    image = Image.open(io.BytesIO(members["jpg"]))
                    image.load()
                    yield {"image": transform(to_rgb(image)), "caption": blip_caption(members["txt"].decode()),
                           "image_id": key}

        return DataLoader(Shards(), batch_size=32, num_workers=workers, collate_fn=collate)
    if variant == "shards_webdataset":
        import webdataset as wds
        from pgmm_data.processors import blip2_image_train, blip_caption

        transform = blip2_image_train(size)
        dataset = (wds.WebDataset(shards, shardshuffle=False)
                   .decode("pil").to_tuple("__key__", "jpg", "txt")
                   .map(lambda s: {"image_id": s[0], "image": transform(s[1]), "caption": blip_caption(s[2])}))
        return DataLoader(dataset, batch_size=32, num_workers=workers, collate_fn=collate)
    if variant == "loose_pgmm":
        from pgmm_core.data import ResumableSampler, SeededItems
        from pgmm_data.configs import JsonlCaptionsConfig
        from pgmm_data.datasets import build_jsonl_captions

        config = JsonlCaptionsConfig(path=str(root / "loose" / "captions.jsonl"))
        items = SeededItems(build_jsonl_captions(config, split="train", image_size=size))
        sampler = ResumableSampler([len(items)], seed=0)
        return DataLoader(items, batch_size=32, sampler=sampler, num_workers=workers, collate_fn=collate)
    if variant == "imagefolder":
        from torchvision import datasets
        from torchvision import transforms as T
        from torchvision.transforms import InterpolationMode

        transform = T.Compose([T.RandomResizedCrop(size, scale=(0.5, 1.0), interpolation=InterpolationMode.BICUBIC),
                               T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(CLIP_MEAN, CLIP_STD)])
        dataset = datasets.ImageFolder(str(root / "imagefolder"), transform=transform)
        return DataLoader(dataset, batch_size=32, shuffle=True, num_workers=workers,
                          generator=torch.Generator().manual_seed(0))
    raise ValueError(variant)


def read_only(variant: str, root: Path) -> int:
    """The I/O alone: every image's bytes, from the tars in order or from the files in a shuffled order."""
    if variant == "read_shards":
        return sum(1 for _ in _tar_samples(sorted(str(p) for p in (root / "shards").glob("*.tar"))))
    import random

    paths = sorted((root / "loose" / "photos").glob("*.jpg"))
    random.Random(0).shuffle(paths)
    for path in paths:
        with open(path, "rb") as handle:
            handle.read()
    return len(paths)


def measure(variant: str, root: Path, size: int, workers: int) -> dict[str, float]:
    """One epoch: images, wall seconds, CPU seconds of this process and its children (workers)."""
    if variant.startswith("read_"):
        wall, cpu = time.perf_counter(), _cpu_seconds()
        images = read_only(variant, root)
        return {"images": images, "wall": time.perf_counter() - wall, "cpu": _cpu_seconds() - cpu}
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    loader = build_loader(variant, root, size, workers)
    wall, cpu = time.perf_counter(), _cpu_seconds()
    images = 0
    for batch in loader:
        images += len(batch[0]) if isinstance(batch, (list, tuple)) else len(batch)
    return {"images": images, "wall": time.perf_counter() - wall, "cpu": _cpu_seconds() - cpu}


def _cpu_seconds() -> float:
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


# --- data and page cache (parent) ------------------------------------------------------------------


def make_data(root: Path, images: int, samples_per_shard: int) -> None:
    from pgmm_core.cli import main as cli_main
    from pgmm_core.testing import tiny_config, write_config
    from pgmm_data.testing import write_jsonl_tree

    tree = write_jsonl_tree(root / "loose", images=images, size=(640, 480))
    lines = tree.annotation_files["train"].read_text().splitlines()
    with open(tree.annotation_files["train"], "w") as handle:  # one caption per image: one sample per file
        for line in lines:
            entry = json.loads(line)
            entry["caption"] = entry["caption"] if isinstance(entry["caption"], str) else entry["caption"][0]
            handle.write(json.dumps(entry) + "\n")
    classes = 10  # ImageFolder wants class folders; the photos cycle through 10 subjects
    for i, path in enumerate(tree.images["train"]):
        target = root / "imagefolder" / f"class{i % classes}" / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(path, target)  # the same inode: the same bytes on disk and in the page cache
    config = tiny_config(root / "run", data={"train": [{"type": "jsonl_captions", "path": str(tree.annotation_files["train"])}]})
    write_config(root / "config.json", config)
    code = cli_main(["data", "shard", str(root / "config.json"), "--out", str(root / "shards"),
                     "--samples-per-shard", str(samples_per_shard)])
    if code:
        raise SystemExit(f"data shard failed: {code}")


def data_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and p.suffix in (".jpg", ".tar", ".jsonl")]


def set_cache(root: Path, warm: bool) -> None:
    """Read every data file (warm) or drop it from the page cache (cold)."""
    os.sync()  # dirty pages cannot be dropped
    for path in data_files(root):
        fd = os.open(path, os.O_RDONLY)
        try:
            if warm:
                while os.read(fd, 1 << 20):
                    pass
            else:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def machine() -> dict:
    import platform

    import torch

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "load_average": list(os.getloadavg())}


def workers_per_device(shard_rate: float) -> list[dict]:
    """Workers one device needs, from scaling.py's predicted samples/s and the measured rate."""
    path = RESULTS / "scaling.json"
    if not path.is_file():
        return []
    predictions = json.loads(path.read_text())["predictions"]
    rows = []
    for device in ("Ascend 910B, fp32", "Ascend 910B, bf16"):
        p = predictions.get(device)
        if p is None:
            continue
        low, high = p["range_samples_per_s"]
        rows.append({"device": device, "samples_per_s": p["pgmm_samples_per_s"], "range": [low, high],
                     "workers": math.ceil(p["pgmm_samples_per_s"] / shard_rate),
                     "workers_at_high": math.ceil(high / shard_rate),
                     "workers_at_half_speed_cores": math.ceil(high / (shard_rate / 2))})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1500, help="distinct JPEG files, 640x480 (default 1500)")
    parser.add_argument("--samples-per-shard", dest="samples_per_shard", type=int, default=250)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--workers", type=int, default=0,
                        help="DataLoader worker processes (default 0: the loading runs in the timed process)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one round: checks that the script works")
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:  # child process: one timing
        print(json.dumps(measure(args.variant, Path(args.root), args.size, args.workers)))
        return
    if args.smoke:
        args.images, args.samples_per_shard, args.rounds = 64, 16, 1
    rates: dict[str, dict[str, list[dict]]] = {c: {v: [] for v in VARIANTS} for c in ("warm", "cold")}
    with tempfile.TemporaryDirectory(dir=os.environ.get("PGMM_BENCH_TMP")) as tmp:
        root = Path(tmp)
        make_data(root, args.images, args.samples_per_shard)
        sizes = {"loose_bytes": sum(p.stat().st_size for p in (root / "loose" / "photos").glob("*.jpg")),
                 "shard_bytes": sum(p.stat().st_size for p in (root / "shards").glob("*.tar")),
                 "shards": len(list((root / "shards").glob("*.tar")))}
        for round_ in range(args.rounds):
            for cache in ("warm", "cold"):
                order = VARIANTS[round_ % len(VARIANTS):] + VARIANTS[:round_ % len(VARIANTS)]
                for variant in order:
                    set_cache(root, warm=cache == "warm")
                    out = subprocess.run([sys.executable, __file__, "--variant", variant, "--root", str(root),
                                          "--size", str(args.size), "--workers", str(args.workers)],
                                         capture_output=True, text=True, check=False)
                    if out.returncode:
                        raise SystemExit(f"{variant} failed:\n{out.stderr}")
                    rates[cache][variant].append(json.loads(out.stdout.strip().splitlines()[-1]))
    summary = {cache: {v: {"wall_images_per_s": statistics.median(r["images"] / r["wall"] for r in runs),
                           "cpu_images_per_s": statistics.median(r["images"] / r["cpu"] for r in runs),
                           "images": runs[0]["images"]} for v, runs in per.items()} for cache, per in rates.items()}
    for per in summary.values():
        assert len({s["images"] for s in per.values()}) == 1, per  # every loader read the whole set once
    # per worker with a core to itself: CPU time (wall time measures the neighbours on shared cores)
    shard_rate = summary["cold"]["shards_tarfile"]["cpu_images_per_s"]
    result = {"benchmark": "loader_throughput", "machine": machine(), "images": args.images, "size": args.size,
              "samples_per_shard": args.samples_per_shard, "rounds": args.rounds, "workers": args.workers, **sizes,
              "runs": rates, "summary": summary, "workers_per_device": workers_per_device(shard_rate)}
    if not args.smoke:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "loader_throughput.json").write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))


def table(result: dict) -> str:
    summary = result["summary"]
    loading = "in-process loading (one worker)" if not result["workers"] else f"{result['workers']} workers"
    lines = [(f"{result['images']} JPEGs 640x480 ({result['loose_bytes'] / 1e6:.0f} MB loose, {result['shards']} shards "
              f"{result['shard_bytes'] / 1e6:.0f} MB) -> {result['size']}, batch 32, {loading}, "
              f"median of {result['rounds']} epochs"), "",
             "| loader | warm: images/s (wall) | warm: images/CPU-s | cold: images/s (wall) | cold: images/CPU-s |",
             "|---|---|---|---|---|"]
    for variant in VARIANTS:
        w, c = summary["warm"][variant], summary["cold"][variant]
        lines.append(f"| {LABELS[variant]} | {w['wall_images_per_s']:.1f} | {w['cpu_images_per_s']:.1f} | "
                     f"{c['wall_images_per_s']:.1f} | {c['cpu_images_per_s']:.1f} |")
    lines.append("")
    for cache in ("warm", "cold"):
        ratios = []
        for unit in ("cpu", "wall"):
            rate = {v: summary[cache][v][f"{unit}_images_per_s"] for v in VARIANTS}
            ratios.append(f"shards / loose files {rate['shards_tarfile'] / rate['loose_pgmm']:.2f}x, "
                          f"shards / ImageFolder {rate['shards_tarfile'] / rate['imagefolder']:.2f}x ({unit} time)")
        lines.append(f"{cache}: " + "; ".join(ratios))
    if result["workers_per_device"]:
        lines += ["", "| device | predicted samples/s (30-50%) | loader workers needed (at the high end) |",
                  "|---|---|---|"]
        for row in result["workers_per_device"]:
            lines.append(f"| {row['device']} | {row['samples_per_s']:.1f} ({row['range'][0]:.1f}-{row['range'][1]:.1f}) | "
                         f"{row['workers']} ({row['workers_at_high']}; {row['workers_at_half_speed_cores']} on cores "
                         "half as fast) |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
