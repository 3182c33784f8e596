"""Several processes on ``jax.distributed``: start-up, who writes, where a process's rows are.

A run is one process (the default) or ``N`` processes started alike, each owning its local
devices; together they form one global ``('data',)`` mesh over ``jax.devices()`` and train on
one global batch. Process ``p`` builds only the rows of each batch that live on its own devices
(:func:`local_rows`); ``jax.make_array_from_process_local_data`` joins the pieces into one
global array. Only process 0 writes the workdir's side files, metrics and plots; checkpoints
are written by orbax, which coordinates the processes itself.

How a process learns its place (the first that is set wins):

* flags ``--coordinator_address host:port --num_processes N --process_id i``;
* environment variables ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``,
  ``JAX_PROCESS_ID`` (the first is also read by ``jax.distributed.initialize`` itself);
* ``--distributed`` alone: ``jax.distributed.initialize()`` detects the cluster
  (SLURM, Open MPI, Kubernetes, Cloud TPU).

On CPU the cross-process collectives use gloo (``jax_cpu_collectives_implementation``).
Runs on different process layouts give the same bits when they share the collectives (start
the 1-process run with ``--num_processes 1`` too) and the XLA:CPU thread-pool size (the same
``NPROC`` in every process); see README, "Scaling out".
"""

from __future__ import annotations

import os

import jax
import numpy as np

__all__ = ["initialize", "is_primary", "local_rows", "process_count", "any_process", "barrier"]


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, auto: bool = False) -> bool:
    """Join a multi-process run if asked to; returns whether ``jax.distributed`` was started.

    Must run before any JAX computation. Missing arguments are read from
    ``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID``. With nothing set
    and ``auto=False`` this is a no-op (a single process).

    Example:
        >>> initialize()  # nothing set: one process, nothing started
        False

    Raises:
      ValueError: an address without a process count or id (or the reverse), or an id outside
        ``[0, num_processes)``.
    """
    env = os.environ
    coordinator_address = coordinator_address or env.get("JAX_COORDINATOR_ADDRESS") or None
    if num_processes is None and env.get("JAX_NUM_PROCESSES"):
        num_processes = int(env["JAX_NUM_PROCESSES"])
    if process_id is None and env.get("JAX_PROCESS_ID"):
        process_id = int(env["JAX_PROCESS_ID"])
    given = [v is not None for v in (coordinator_address, num_processes, process_id)]
    if not any(given) and not auto:
        return False
    if any(given) and not all(given) and not auto:
        raise ValueError("`coordinator_address`, `num_processes` and `process_id` must be given together "
                         "(flags or JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID); got "
                         f"{coordinator_address!r}, {num_processes!r}, {process_id!r}.")
    if num_processes is not None and num_processes < 1:
        raise ValueError(f"`num_processes` must be >= 1, got {num_processes}.")
    if process_id is not None and num_processes is not None and not 0 <= process_id < num_processes:
        raise ValueError(f"`process_id` must lie in [0, {num_processes}), got {process_id}.")
    platforms = env.get("JAX_PLATFORMS", "") or str(jax.config.jax_platforms or "")
    if platforms.split(",")[0] in ("", "cpu"):
        # Cross-process collectives on CPU devices (harmless when an accelerator is used).
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id)
    return True


def process_count() -> int:
    """Number of processes of the run (1 without ``jax.distributed``)."""
    return jax.process_count()


def is_primary() -> bool:
    """True on the process that writes files (process 0)."""
    return jax.process_index() == 0


def local_rows(sharding: jax.sharding.Sharding, batch_size: int) -> slice:
    """The rows ``[start, stop)`` of a global batch of ``batch_size`` rows (sharded along its
    first axis by ``sharding``) that this process's devices hold.

    Example:
        >>> import jax
        >>> from jax.sharding import NamedSharding, PartitionSpec as P
        >>> mesh = jax.make_mesh((1,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
        >>> local_rows(NamedSharding(mesh, P("data")), 8)
        slice(0, 8, None)

    Raises:
      ValueError: the process's rows are not one contiguous block (a device order that
        interleaves processes along the batch axis).
    """
    idx = sharding.addressable_devices_indices_map((batch_size,))
    spans = sorted({(s[0].start or 0, batch_size if s[0].stop is None else s[0].stop) for s in idx.values()})
    start, stop = spans[0][0], spans[0][1]
    for a, b in spans[1:]:
        if a != stop:
            raise ValueError(f"this process's batch rows are not contiguous: {spans}.")
        stop = b
    return slice(int(start), int(stop))


def barrier(name: str, timeout_s: int = 600) -> None:
    """Wait until every process reaches this point (the coordination service's barrier; a no-op
    with one process). Used before the first training step: the CPU (gloo) communicators
    give up if the processes reach their first collective more than ~30 s apart."""
    if jax.process_count() == 1:
        return
    from jax._src import distributed as _dist  # the client jax.distributed.initialize created

    client = _dist.global_state.client
    if client is not None:
        client.wait_at_barrier(f"lossjax_{name}", timeout_s * 1000)


_ANY_FNS: dict = {}


def any_process(flag: bool, sharding: jax.sharding.NamedSharding) -> bool:
    """Whether ``flag`` is set on any process (every process gets the same answer).

    A collective over the devices of ``sharding`` (a 1-D batch sharding of the training
    mesh, so it reuses the training step's communicators): every process must call it at the
    same point of the loop. Free with one process.
    """
    if jax.process_count() == 1:
        return bool(flag)
    n = sharding.mesh.devices.size
    fn = _ANY_FNS.get(sharding)
    if fn is None:
        replicated = jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec())
        fn = _ANY_FNS[sharding] = jax.jit(lambda f: f.max(), out_shardings=replicated)
    rows = local_rows(sharding, n)
    local = np.full((rows.stop - rows.start,), int(flag), np.int32)
    return bool(np.asarray(fn(jax.make_array_from_process_local_data(sharding, local, (n,)))))
