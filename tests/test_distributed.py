"""Distributed training with torchrun (gloo on the CPU): ranks stay in lockstep,
rank 0 writes everything, normalizers merge every rank's data, runs resume with
another number of ranks. All traffic stays on the loopback interface."""

import csv
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
    resumed = run_script(script, "--resume", "run", "--total-timesteps", "384", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert [int(r["global_step"]) for r in rows(run_dir / "progress.csv")] == [128, 256, 320, 384]


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
