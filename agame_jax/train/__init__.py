"""Training: optimiser and schedule, the (sharded) train step. The loop, data pipeline and
checkpointing come with the rest of issue 3."""
