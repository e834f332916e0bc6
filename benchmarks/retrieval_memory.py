"""Peak memory of the zero-shot retrieval evaluation on a COCO-sized test set (5,000 images x 25,000 captions).

Runs :func:`pgmm_vision.stage1.retrieval.evaluate_retrieval` end to end, one rank, with the table
stand-in model of :mod:`pgmm_vision.stage1.retrieval_testing` at the real feature shapes (32 queries
x 256 per image, 256 per text, random, L2-normalised; ITM logits made from the pair's indices), so
what is measured is the evaluation's own bookkeeping — ITC similarities in blocks, top-k candidates,
the re-scored pairs, ranks and results — not a Q-Former's activations (one ITM batch of those,
``itm_batch_size`` pairs, comes on top on a real model). Peak memory is ``VmHWM`` after resetting
it with ``/proc/self/clear_refs``, minus the resident size once the stand-in model and data exist.

    python benchmarks/retrieval_memory.py            # COCO Karpathy test size (a few minutes on 2 cores)
    python benchmarks/retrieval_memory.py --smoke    # 500 x 2,500, to check that it works
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def measure(images: int, captions_per_image: int, queries: int, width: int, k_test: int, threads: int) -> dict:
    from types import SimpleNamespace

    import numpy as np
    import torch

    from pgmm_vision.stage1.retrieval import evaluate_retrieval
    from pgmm_vision.stage1.retrieval_settings import RetrievalSettings
    from pgmm_vision.stage1.retrieval_testing import TableConnector, TableDataset, TableModel, ThreadRankContext

    torch.set_num_threads(threads)
    texts = images * captions_per_image
    generator = torch.Generator().manual_seed(0)
    image_features = torch.nn.functional.normalize(torch.randn(images, queries, width, generator=generator), dim=-1)
    text_features = torch.nn.functional.normalize(torch.randn(texts, width, generator=generator), dim=-1)
    model = TableModel(TableConnector(image_features, text_features, None, record_pairs=False))
    data = TableDataset(np.repeat(np.arange(images), captions_per_image), image_ids=list(range(images)))
    context = ThreadRankContext(device=torch.device("cpu"), policy=None, collectives=None, batch_size=64,
                                num_workers=0, eval=SimpleNamespace(max_images=None))
    settings = RetrievalSettings(k_test=k_test)
    base = _kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")
    start = time.perf_counter()
    output = evaluate_retrieval(model, data, context, settings)
    seconds = time.perf_counter() - start
    peak = _kib("VmHWM")
    naive = images * texts * queries * 4
    return {
        "images": images, "texts": texts, "queries": queries, "width": width, "k_test": k_test,
        "block_elements": settings.block_elements,
        "peak_above_model_mib": round((peak - base) / 1024, 1),
        "model_and_data_mib": round(base / 1024, 1),
        "full_similarity_tensor_mib": round(naive / 2**20, 1),
        "seconds": round(seconds, 1),
        "metrics": {k: round(v, 3) for k, v in output.metrics.items()},
        "results": len(output.results),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="500 images x 2,500 captions")
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--k-test", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    images = 500 if args.smoke else args.images
    result = measure(images, 5, 32, 256, args.k_test, args.threads)
    if not args.smoke:  # (a smoke run only checks that the script works)
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "retrieval_memory.json").write_text(json.dumps(result, indent=2) + "\n")
    print("| images x texts | queries x width | k_test | peak above model | full image x text x query tensor "
          "| time |\n"
          f"|---|---|---|---|---|---|\n"
          f"| {result['images']:,} x {result['texts']:,} | {result['queries']} x {result['width']} | "
          f"{result['k_test']} | {result['peak_above_model_mib']} MiB | {result['full_similarity_tensor_mib']} MiB | "
          f"{result['seconds']} s |")


if __name__ == "__main__":
    main()
