"""Replicas started with different specs or flags are refused at start, in one line naming
the ranks and what differs (train/mpi.py Replicas.check_alike), instead of meeting as an
allreduce of unlike buffers ("allreduce failed: MPI_ERR_OTHER")."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from netspec.train.mpi import disagreement, fingerprint

from test_distributed import MPIRUN, mpi
from trainkit import tiny_spec

ROOT = Path(__file__).resolve().parents[2]


def test_disagreement_names_the_ranks_and_the_items():
    same = {"spec": fingerprint("a"), "seed": fingerprint("0")}
    assert disagreement([same, dict(same), dict(same)]) is None
    other = dict(same, spec=fingerprint("b"))
    line = disagreement([same, dict(same), other])
    assert line == (f"the replicas were not started alike: rank 2 of 3 differ from rank 0 in "
                    f"the spec (sha256 prefixes: spec: {fingerprint('a')} on rank 0, "
                    f"{fingerprint('b')} on rank 2); give every rank the same --spec, data "
                    f"and flags")
    both = disagreement([same, dict(other, seed=fingerprint("1")), other])
    assert both.startswith("the replicas were not started alike: ranks 1, 2 of 3 differ from "
                           "rank 0 in the seed and the spec (")


@mpi
def test_two_ranks_given_different_specs_get_one_line(folder, tmp_path):
    a, b = tmp_path / "a.net", tmp_path / "b.net"
    a.write_text(tiny_spec(batch="4", epochs="1"))
    b.write_text(tiny_spec(batch="4", epochs="1").replace("outputs 256", "outputs 128", 1))
    assert a.read_text() != b.read_text()
    run = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_COMM", "PMI_"))}
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               NETSPEC_COLLECTIVE_TIMEOUT="60")

    def rank(spec):
        return ["-n", "1", sys.executable, "-m", "netspec.cli", "train", "--spec", str(spec),
                "--data", str(folder), "--backend", "numpy", "--out", str(run),
                "--max-steps", "1", "--no-progress"]

    r = subprocess.run([MPIRUN, "--oversubscribe", *rank(a), ":", *rank(b)], env=env,
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 2, r.stdout + r.stderr
    errors = [line for line in r.stderr.splitlines() if "netspec: error" in line]
    sha = {p: fingerprint(p.read_text()) for p in (a, b)}
    assert errors == [f"netspec: error: the replicas were not started alike: rank 1 of 2 "
                      f"differ from rank 0 in the spec (sha256 prefixes: spec: {sha[a]} on "
                      f"rank 0, {sha[b]} on rank 1); give every rank the same --spec, data "
                      f"and flags"], r.stderr
    assert "MPI_ERR" not in r.stderr and "Traceback" not in r.stderr
    assert not (run / "launch.json").exists()
