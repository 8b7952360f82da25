"""Data: built-in synthetic videos (readers and the training pipeline come with issue 3)."""
