"""``python -m agame_jax.app``: serve the segmentation page on this machine."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DEFAULT_SAMPLES = Path(os.environ.get(
    "AGAME_SHARED", Path(__file__).resolve().parents[3] / "shared")) / "data"


def build_parser() -> argparse.ArgumentParser:
    """The command line (defaults: localhost, port 7860, the shipped demo model)."""
    parser = argparse.ArgumentParser(prog="python -m agame_jax.app",
                                     description="Segment your own video in the browser.")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="checkpoint, step or training workdir (default: the small "
                             "synthetic-trained model that ships with the project, a demo)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default: this machine only)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--work-size", type=int, default=None,
                        help="long side in pixels frames are scaled to for the model "
                             "(default: 128 for the demo model, 480 otherwise)")
    parser.add_argument("--chunk-size", type=int, default=16,
                        help="frames per model call (memory grows with it)")
    parser.add_argument("--samples", type=Path, default=DEFAULT_SAMPLES,
                        help="folder searched for sample clips (<set>/JPEGImages/480p/<clip>)")
    parser.add_argument("--max-upload-mb", type=float, default=512,
                        help="largest upload accepted, in MB")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    import uvicorn

    from agame_jax.app.runner import Runner
    from agame_jax.app.server import create_app
    from agame_jax.app.weights import describe
    from agame_jax.segmenter import Segmenter

    try:
        weights = describe(args.checkpoint)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"weights: {weights.summary}")
    segmenter = Segmenter.from_checkpoint(weights.path, chunk_size=args.chunk_size)
    runner = Runner(segmenter, weights, args.work_size or weights.work_size)
    app = create_app(runner, samples_root=args.samples, max_upload_mb=args.max_upload_mb)
    print(f"open http://{args.host}:{args.port}/ (Ctrl-C stops the server)")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
