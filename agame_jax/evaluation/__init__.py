"""Evaluation: the DAVIS J/F metrics (the inference tool comes with issue 4)."""
