"""Train A-GAME: ``python train.py --config configs/NAME.py [--workdir DIR] [--config.F=V ...]``.

The logic lives in ``agame_jax.train.train_and_evaluate``; this file only parses flags.
Rerunning the same command on a workdir with checkpoints resumes where it stopped.
"""
from agame_jax.train.cli import main

if __name__ == "__main__":
    main()
