"""``python -m pgmm_core serve``: the command pgmm-serve contributes through ``pgmm_register_commands``.

Argument parsing, start-up messages and uvicorn; the server is :func:`pgmm_serve.app.create_app`.
Importing this module is cheap (no torch, no FastAPI): ``configure`` runs whenever the command line
is parsed.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os

logger = logging.getLogger("pgmm_serve")

API_KEY_ENV = "PGMM_SERVE_API_KEY"


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, help="run directory (config.json + checkpoints/)")
    parser.add_argument("--checkpoint", default="best", help="best (default), last, or a checkpoint directory")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides, e.g. model.llm.path=/data/pangu device.type=cpu")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only). Any other address "
                        "exposes the model to the network; without --api-key anyone who reaches it may use it")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--api-key", default=os.environ.get(API_KEY_ENV),
                        help=f"require this key on every request (default: ${API_KEY_ENV}; none: no authentication)")
    batching = parser.add_argument_group("batching")
    batching.add_argument("--max-batch-size", type=_positive_int, default=8,
                          help="requests generated together at most (default 8; 1 turns batching off)")
    batching.add_argument("--max-wait-ms", type=_non_negative_float, default=10.0,
                          help="how long the first request of a batch waits for others (default 10 ms)")
    batching.add_argument("--queue-size", type=_positive_int, default=64,
                          help="requests queued or running at most; beyond: 503 with Retry-After (default 64)")
    limits = parser.add_argument_group("limits of one request")
    limits.add_argument("--max-upload-mb", type=float, default=10.0, help="largest image file (default 10 MB)")
    limits.add_argument("--max-image-pixels", type=_positive_int, default=25_000_000,
                        help="largest image, width x height, checked before decoding (default 25,000,000)")
    limits.add_argument("--max-new-tokens", type=_positive_int, default=64,
                        help="largest max_new_tokens a request may ask for (default 64)")
    limits.add_argument("--max-num-beams", type=_positive_int, default=8, help="largest num_beams (default 8)")
    parser.add_argument("--no-ask", action="store_true", help="captions only: do not load the run for questions")


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from pgmm_serve.app import ServeSettings, create_app
    from pgmm_serve.engine import Engine
    from pgmm_serve.inputs import Limits

    limits = Limits(max_upload_bytes=int(args.max_upload_mb * 1024 * 1024), max_image_pixels=args.max_image_pixels,
                    max_new_tokens=args.max_new_tokens, max_num_beams=args.max_num_beams)
    settings = ServeSettings(max_batch_size=args.max_batch_size, max_wait_ms=args.max_wait_ms,
                             queue_size=args.queue_size, api_key=args.api_key or None, limits=limits)
    if not _is_loopback(args.host) and not settings.api_key:
        logger.warning("pgmm serve: warning: listening on %s without --api-key: anyone who can reach this "
                       "address can use the model (and the machine's time). Give --api-key, or keep the default "
                       "--host 127.0.0.1.", args.host)
    engine = Engine.from_run(args.run, checkpoint=args.checkpoint, overrides=args.set, questions=not args.no_ask)
    app = create_app(engine, settings)
    url = f"http://{'[' + args.host + ']' if ':' in args.host else args.host}:{args.port}/"
    print(f"serving {args.run} (checkpoint {args.checkpoint}) on {url}  — API reference: {url}docs", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, access_log=False, log_config=None)
    return 0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
