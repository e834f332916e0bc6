"""Decode + train-transform throughput of pgmm's loader, per worker, against a plain PIL + torchvision loop.

    python benchmarks/data_loading.py [--images 120] [--rounds 7] [--size 224]

Data: scikit-image's sample photographs (astronaut, chelsea, coffee, rocket, …) resized to COCO's
640x480 and saved as JPEG (quality 90) in a COCO Karpathy tree in a temporary directory.

Variants, each timed in its own fresh process with one torch thread (what one DataLoader worker
has), alternating over several rounds; images per second of process CPU time (user + system, so
page faults count), median round reported:

* ``plain loop``: the LAVIS way — ``Image.open(p).convert("RGB")`` then
  ``Compose([RandomResizedCrop(224, (0.5, 1), bicubic), RandomHorizontalFlip(), ToTensor(), Normalize(CLIP)])``;
* ``pgmm``: ``coco_caption`` items through :class:`pgmm_core.data.SeededItems` (decode, bad-image
  checks, per-sample seeded augmentation, caption processing) — exactly what a worker runs;
* the same pair for the eval transform (``Resize((224, 224), bicubic)`` + ToTensor + Normalize), and
  pgmm's ``blip_image_train`` (with LAVIS' RandomAugment) for reference.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
VARIANTS = ("plain_train", "pgmm_train", "plain_eval", "pgmm_eval", "pgmm_blip_train")


def measure(variant: str, root: Path, size: int, count: int) -> float:
    """Images per second of one variant over ``count`` images (after a short warm-up)."""
    import torch

    torch.set_num_threads(1)
    if variant.startswith("plain"):
        from PIL import Image
        from torchvision import transforms as T
        from torchvision.transforms import InterpolationMode

        if variant == "plain_train":
            head = [T.RandomResizedCrop(size, scale=(0.5, 1.0), interpolation=InterpolationMode.BICUBIC),
                    T.RandomHorizontalFlip()]
        else:
            head = [T.Resize((size, size), interpolation=InterpolationMode.BICUBIC)]
        transform = T.Compose([*head, T.ToTensor(), T.Normalize(CLIP_MEAN, CLIP_STD)])
        paths = sorted(str(p) for p in (root / "images" / "train2014").glob("*.jpg"))

        def load(i: int):
            return transform(Image.open(paths[i % len(paths)]).convert("RGB"))
    else:
        from pgmm_core.data import ResumableSampler, SeededItems
        from pgmm_data.configs import CocoCaptionConfig
        from pgmm_data.datasets import build_coco_caption

        processor = "blip_image_train" if variant == "pgmm_blip_train" else "blip2_image_train"
        split = "val" if variant == "pgmm_eval" else "train"
        config = CocoCaptionConfig(root=str(root), split="train", image_processor=processor)
        items = SeededItems(build_coco_caption(config, split=split, image_size=size))
        sampler = ResumableSampler([len(items)], seed=0)
        keys = list(sampler)

        def load(i: int):
            item = items[keys[i % len(keys)]] if split == "train" else items[i % len(items)]
            assert "bad" not in item
            return item["image"]

    for i in range(8):
        load(i)
    started = time.process_time()  # CPU time (user + system): robust to other processes sharing the cores
    for i in range(count):
        load(i)
    return count / (time.process_time() - started)


def make_tree(root: Path, images: int) -> None:
    from pgmm_data.testing import write_coco_tree

    write_coco_tree(root, train=images, val=1, test=1, size=(640, 480), captions_per_image=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=120, help="distinct JPEG files (default 120)")
    parser.add_argument("--count", type=int, default=300, help="images loaded per timing (default 300)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:  # child process: one timing
        print(json.dumps(measure(args.variant, Path(args.root), args.size, args.count)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "coco"
        make_tree(root, args.images)
        rates: dict[str, list[float]] = {v: [] for v in VARIANTS}
        for _ in range(args.rounds):
            for variant in VARIANTS:
                out = subprocess.run([sys.executable, __file__, "--variant", variant, "--root", str(root),
                                      "--size", str(args.size), "--count", str(args.count)],
                                     capture_output=True, text=True, check=True)
                rates[variant].append(json.loads(out.stdout.strip().splitlines()[-1]))
    median = {v: statistics.median(r) for v, r in rates.items()}
    print(f"decode + transform, one worker (1 torch thread), {args.images} JPEGs 640x480 -> {args.size}, "
          f"median of {args.rounds} rounds x {args.count} images, images per CPU-second")
    print(f"{'variant':<38} {'images/s':>9}  {'min..max':>15}")
    labels = {
        "plain_train": "plain PIL+torchvision, train",
        "pgmm_train": "pgmm coco_caption, blip2_image_train",
        "plain_eval": "plain PIL+torchvision, eval",
        "pgmm_eval": "pgmm coco_caption, blip_image_eval",
        "pgmm_blip_train": "pgmm coco_caption, blip_image_train",
    }
    for variant in VARIANTS:
        r = rates[variant]
        print(f"{labels[variant]:<38} {median[variant]:9.1f}  {min(r):7.1f}..{max(r):<7.1f}")
    print(f"train ratio pgmm / plain: {median['pgmm_train'] / median['plain_train']:.2f}x;  "
          f"eval ratio: {median['pgmm_eval'] / median['plain_eval']:.2f}x")


if __name__ == "__main__":
    main()
