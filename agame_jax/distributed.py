"""Starting JAX's multi-process runtime for training and evaluation on several hosts."""
from __future__ import annotations

import jax


def start(coordinator_address: str = "", num_processes: int = 0, process_id: int = -1) -> None:
    """``jax.distributed.initialize`` with the coordinator (``"host:port"`` of process 0),
    the process count and this process's id where given (``""``, ``0``, ``-1``: JAX finds
    them from ``JAX_COORDINATOR_ADDRESS`` and a cluster environment: SLURM, Open MPI,
    Kubernetes, TPU pods). On CPUs the processes' collectives go through gloo, JAX's only
    transport between CPU processes."""
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    kwargs = {}
    if coordinator_address:
        kwargs["coordinator_address"] = coordinator_address
    if num_processes > 0:
        kwargs["num_processes"] = num_processes
    if process_id >= 0:
        kwargs["process_id"] = process_id
    jax.distributed.initialize(**kwargs)
