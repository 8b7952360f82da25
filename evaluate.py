"""Segment and score videos with a trained A-GAME: see ``agame_jax/evaluation/cli.py``."""
import sys

from agame_jax.evaluation.cli import main

if __name__ == "__main__":
    sys.exit(main())
