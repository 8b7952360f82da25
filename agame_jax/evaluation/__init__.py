"""Evaluation: the videos `evaluate.py` segments, the DAVIS J/F metrics and scoring, and
the command line."""
