"""Run under `mpirun -n K`: one replica of a short training run, through the same guard as
`netspec train` (data_parallel.train_replica: setup agreed, MPI_Abort on failure); then every rank
saves its own final weights (rank{r}.npz) so the tests can compare them across ranks and with
one process. Usage: mpi_replica.py SPEC DATA OUT BACKEND MAX_STEPS [RESUME]; the environment's
REPLICA_DTYPE (float32) is the nets' dtype."""
import os
import sys

import numpy as np

from netspec.train import data_parallel
from netspec.train.loop import Trainer, TrainOptions


def main():
    spec, data, out, backend, steps = sys.argv[1:6]
    resume = sys.argv[6] if len(sys.argv) > 6 else None
    opts = TrainOptions(spec=None if resume else spec, data=None if resume else data,
                        backend=backend, out=None if resume else out, resume=resume,
                        max_steps=int(steps), progress=False,
                        dtype=os.environ.get("REPLICA_DTYPE", "float32"))
    replicas = data_parallel.current()
    made = []

    def make():
        made.append(Trainer(opts, echo=lambda *a, **k: None))
        return made[-1]

    data_parallel.train_replica(replicas, make, lambda m: print(m, file=sys.stderr))
    np.savez(f"{out}/rank{replicas.rank}.npz", **made[0].net.parameters())
    print(f"rank {replicas.rank}: {made[0].step} steps", flush=True)


if __name__ == "__main__":
    main()
