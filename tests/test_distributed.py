"""Distributed training with torchrun (gloo on the CPU): ranks stay in lockstep,
rank 0 writes everything, normalizers merge every rank's data, runs resume with
another number of ranks. All traffic stays on the loopback interface."""

import csv
import json
import socket
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp


from benchmarks.solved import steps_to_threshold
from tests.conftest import REPO, load, run_script, tiny


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def torchrun(script, *args, cwd, ranks=2, timeout=600):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks),
               str(REPO / f"{script}.py"), *map(str, args)]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def test_two_ranks_train_in_lockstep_and_resume_with_one(script, tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(REPO / "tests" / "replicas.py"), script, str(tmp_path), *tiny(script),
               "--total-timesteps", "256", "--run-dir", "run"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    # Every parameter and buffer of both ranks, after each update, bit for bit.
    ranks = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 2
    for state0, state1 in zip(*ranks):
        assert all(torch.equal(state0[name], state1[name]) for name in state0)
    run_dir = tmp_path / "run"
    assert [int(r["global_step"]) for r in rows(run_dir / "progress.csv")] == [128, 256]  # 2 ranks x 64 per update
    # Rank 0 alone stepped 128 times: finished episodes totalling more than that include rank 1's.
    assert sum(int(e["length"]) for e in rows(run_dir / "episodes.csv")) > 128
    checkpoint = torch.load(run_dir / "model.pt", weights_only=True)
    assert checkpoint["agent"]["obs_rms.count"].item() == 256  # every observation of both ranks
    assert checkpoint["reward_scaler"]["count"].item() == 256
    assert checkpoint["world_size"] == json.loads((run_dir / "config.json").read_text())["world_size"] == 2
    resumed = run_script(script, "--resume", "run", "--total-timesteps", "384", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert [int(r["global_step"]) for r in rows(run_dir / "progress.csv")] == [128, 256, 320, 384]
    # One rank where there were two: allowed, and said in one line, since the batch halves.
    assert f"[{script}] the run had 2 ranks, now 1: the global batch changes from 128 to 64 steps" in resumed.stdout
    assert json.loads((run_dir / "config.json").read_text())["world_size"] == 1


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def merge_worker(rank, port, data, out):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    ppo_clip = load("ppo_clip")
    rms = ppo_clip.RunningMeanStd((3,))
    for chunk in data[rank]:
        rms.update(ppo_clip.all_gather_rows(chunk))
    torch.save(rms.state_dict(), out / f"rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


def test_normalizer_merges_every_ranks_observations(tmp_path):
    generator = torch.Generator().manual_seed(0)
    data = [[torch.randn(5, 3, generator=generator) * (rank + 1) + rank for _ in range(4)] for rank in range(2)]
    mp.spawn(merge_worker, args=(free_port(), data, tmp_path), nprocs=2)
    everything = torch.cat([torch.cat(data[0][i:i + 1] + data[1][i:i + 1]) for i in range(4)]).double()
    for rank in range(2):
        state = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        torch.testing.assert_close(state["mean"], everything.mean(0))
        torch.testing.assert_close(state["var"], everything.var(0, unbiased=False))
        assert state["count"].item() == 40


@pytest.mark.learning
@pytest.mark.parametrize("script", ["ppo_clip"])
def test_two_ranks_learn_like_one_rank_with_two_envs(script, tmp_path):
    one = run_script(script, "--num-envs", "2", "--total-timesteps", "100000", "--run-dir", "one", cwd=tmp_path,
                     timeout=900)
    two = torchrun(script, "--total-timesteps", "100000", "--run-dir", "two", cwd=tmp_path, timeout=900)
    assert one.returncode == 0 and two.returncode == 0, two.stderr[-3000:]
    for name in ("one", "two"):
        step = steps_to_threshold(tmp_path / name / "episodes.csv", 475.0, 20)
        assert step is not None and step <= 100_000, name


def test_a_budget_below_one_global_batch_is_refused(tmp_path):
    """Under torchrun an update takes a batch from every rank: 2 ranks x 64 steps is 128."""
    result = torchrun("ppo_clip", *tiny("ppo_clip"), "--total-timesteps", "100", "--run-dir", "run",
                      cwd=tmp_path)
    assert result.returncode != 0
    assert "--total-timesteps 100 is less than one batch of 128 steps" in result.stderr
    assert not (tmp_path / "run").exists()  # (torchrun's launcher adds its own report of the exit)


def cuda_backend_worker(rank, port, script, out):
    """A rank on a machine with GPUs, as far as start_distributed can tell: CUDA is said to be
    there, and the process group gets the device-to-backend map the script asks for, with gloo
    standing in for NCCL on `cuda` (it serves that device type only, as NCCL does). Then every
    collective helper runs on the CPU tensors that the scripts hand it."""
    import os
    from unittest import mock
    os.environ.update(WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    module, asked, real_init = load(script), [], dist.init_process_group

    def init_with_gloo_for_nccl(backend):
        asked.append(backend)
        real_init("cuda:gloo" if backend == "nccl" else backend.replace("nccl", "gloo"))

    with mock.patch.object(torch.cuda, "is_available", return_value=True), \
            mock.patch.object(torch.cuda, "set_device"), \
            mock.patch.object(dist, "init_process_group", init_with_gloo_for_nccl):
        device = module.start_distributed("auto", True)  # a CNN agent: auto takes the GPU
    results = {"device": str(device), "backend": asked}
    try:
        # stop_requested's test, every iteration: a Ctrl-C on rank 1 alone stops both ranks
        results["any_rank"] = module.all_reduce_mean_(torch.tensor(float(rank == 1))).item() > 0
        results["mean"] = module.all_reduce_mean_(torch.full((4,), float(rank))).tolist()
        results["rows"] = module.all_gather_rows(torch.full((2, 3), float(rank))).shape
        lists = [None, None]  # end_update gathers each rank's finished games so
        dist.all_gather_object(lists, [rank])
        results["lists"] = [item for part in lists for item in part]
        scaler = module.RewardScaler(1, 0.99, 10.0)
        scaler.observe(torch.ones(4, 1), torch.zeros(4, 1))  # its returns are NumPy, on the CPU
        results["scaler_count"] = scaler.count.item()
        net = torch.nn.Linear(2, 1)
        net(torch.ones(1, 2)).sum().backward()
        module.average_gradients(list(net.parameters()))
        dist.broadcast(net.weight.detach(), src=0)  # begin() sends rank 0's weights so
    except RuntimeError as error:
        results["error"] = str(error).splitlines()[0]
    torch.save(results, out / f"rank{rank}.pt")
    dist.destroy_process_group()  # no barrier: after an error it would fail the same way


def test_ranks_on_gpus_can_share_cpu_tensors(tmp_path):
    """NCCL serves CUDA tensors only; the Ctrl-C flag, the loss sums and the reward scaler's
    returns are CPU tensors, so a group started as plain "nccl" failed on the first update."""
    mp.spawn(cuda_backend_worker, args=(free_port(), "ppo_clip", tmp_path), nprocs=2)
    for rank in range(2):
        results = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)
        assert "error" not in results, results["error"]
        assert results["device"] == f"cuda:{rank}"
        assert results["backend"] == ["cpu:gloo,cuda:nccl"]
        assert results["any_rank"] is True and results["mean"] == [0.5] * 4
        assert results["rows"] == (4, 3) and results["lists"] == [0, 1]
        assert results["scaler_count"] == 8
