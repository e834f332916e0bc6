"""Write a small captioned image folder to try the plugin without your own photos.

    python -m pgmm_example_plugin.demo_folder OUT [--train 64] [--val 8] [--size 64]

Creates ``OUT/train`` and ``OUT/val``, each with JPEG files and a ``captions.json``, in exactly the
format ``image_folder_captions`` reads. The pictures are pgmm-data's procedural shapes, captioned
with their colour, shape and position.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pgmm_data.synthetic import describe, render


def write_demo_folder(root: str | Path, *, split: str, count: int, size: int = 64, seed: int = 0) -> Path:
    folder = Path(root)
    folder.mkdir(parents=True, exist_ok=True)
    captions = {}
    for index in range(count):
        image, (colour, shape, place) = render(seed, split, index, size)
        name = f"{split}_{index:04d}.jpg"
        image.save(folder / name, format="JPEG", quality=95)
        captions[name] = describe(colour, shape, place)
    (folder / "captions.json").write_text(json.dumps(captions, indent=1) + "\n", encoding="utf-8")
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pgmm_example_plugin.demo_folder",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("out")
    parser.add_argument("--train", type=int, default=64, help="training images (default 64)")
    parser.add_argument("--val", type=int, default=8, help="validation images (default 8)")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    args = parser.parse_args(argv)
    for split, count in (("train", args.train), ("val", args.val)):
        folder = write_demo_folder(Path(args.out) / split, split=split, count=count, size=args.size)
        print(f"{folder}: {count} images and captions.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
