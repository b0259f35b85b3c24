"""Run under `mpirun -n K`: one replica of a short training run through the Trainer, then every
rank saves its own final weights (rank{r}.npz) so the tests can compare them across ranks and
with one process. Usage: mpi_replica.py SPEC DATA OUT BACKEND MAX_STEPS [RESUME]"""
import sys

import numpy as np

from netspec.train import distributed
from netspec.train.loop import TrainOptions, Trainer


def main():
    spec, data, out, backend, steps = sys.argv[1:6]
    resume = sys.argv[6] if len(sys.argv) > 6 else None
    opts = TrainOptions(spec=None if resume else spec, data=None if resume else data,
                        backend=backend, out=None if resume else out, resume=resume,
                        max_steps=int(steps), progress=False)
    replicas = distributed.current()
    trainer = Trainer(opts, echo=lambda *a, **k: None)
    trainer.run()
    params = trainer.net.parameters()
    np.savez(f"{out}/rank{replicas.rank}.npz", **params)
    print(f"rank {replicas.rank}: {trainer.step} steps, stats "
          f"{trainer.data_parallel.epoch_metrics()}", flush=True)


if __name__ == "__main__":
    main()
