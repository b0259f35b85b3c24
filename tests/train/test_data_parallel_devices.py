"""Where NCCL can join data-parallel replicas (train/data_parallel.py's shared_nccl_devices):
NCCL refuses a GPU that two ranks of one communicator use ("Duplicate GPU detected"), so two
replicas on one GPU reduce on host memory with MPI instead, and say which devices clash."""
from __future__ import annotations

from netspec.train.data_parallel import local_devices, shared_nccl_devices


def test_replicas_on_their_own_devices_can_use_nccl():
    # 2 replicas of 2-GPU AlexNet on a 4-GPU node: 0,1 and 2,3
    placements = [f"node:{','.join(map(str, local_devices(None, 2, r, 4)))}" for r in range(2)]
    assert placements == ["node:0,1", "node:2,3"]
    assert shared_nccl_devices(placements) is None
    # the same device numbers on two machines are two GPUs
    assert shared_nccl_devices(["a:0,1", "b:0,1"]) is None


def test_two_replicas_on_one_gpu_are_named():
    placements = [f"node:{','.join(map(str, local_devices(None, 2, r, 1)))}" for r in range(2)]
    assert placements == ["node:0,0", "node:0,0"]
    why = shared_nccl_devices(placements)
    assert why == ("replicas 0 and 1 both run logical GPU 0 on cuda:0 of node, and NCCL "
                   "refuses a GPU twice")
