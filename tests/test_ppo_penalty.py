"""Tests of what is ppo_penalty.py's own: the penalized objective, the adaptive
beta, and their effect on real runs. The behaviour every script shares (command
line, outputs, resume, determinism) is tested over all scripts elsewhere."""

import csv

import pytest
import torch

from tests.conftest import load, run_script, tiny

TINY = tiny("ppo_penalty")

ppo_penalty = load("ppo_penalty")


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ----------------------------------------------------------------------------------
# adapt_beta: PPO paper section 4, checked on numbers chosen so that the bounds
# d_targ / 1.5 and d_targ * 1.5 are exact in floating point (target 3 -> 2 and 4.5).
# ----------------------------------------------------------------------------------
@pytest.mark.parametrize("kl, expected", [
    (1.0, 0.5),     # far below d_targ / 1.5: halve
    (1.999, 0.5),   # just below the lower bound
    (2.0, 1.0),     # on the lower bound: the rule is a strict "<", keep
    (3.0, 1.0),     # on target: keep
    (4.5, 1.0),     # on the upper bound: the rule is a strict ">", keep
    (4.501, 2.0),   # just above the upper bound
    (100.0, 2.0),   # far above: double
])
def test_adapt_beta_branches_and_bounds(kl, expected):
    assert ppo_penalty.adapt_beta(1.0, kl, 3.0) == expected


def test_adapt_beta_with_the_paper_defaults():
    # d_targ = 0.01: keep beta for d in [0.00667, 0.015].
    assert ppo_penalty.adapt_beta(0.8, 0.006, 0.01) == pytest.approx(0.4)
    assert ppo_penalty.adapt_beta(0.8, 0.007, 0.01) == 0.8
    assert ppo_penalty.adapt_beta(0.8, 0.014, 0.01) == 0.8
    assert ppo_penalty.adapt_beta(0.8, 0.016, 0.01) == pytest.approx(1.6)
    assert ppo_penalty.adapt_beta(0.8, 0.0, 0.01) == pytest.approx(0.4)  # the policy did not move


def test_beta_stays_within_its_bounds_however_long_the_kl_stays_off_target():
    """Breakout's KL sat below d_targ / 1.5 for hundreds of updates and took an unbounded beta
    to 8e-84; ten updates back on target must bring beta back from either bound."""
    beta = 1.0
    for _ in range(5000):  # the policy barely moves, update after update
        beta = ppo_penalty.adapt_beta(beta, 1e-6, 0.01)
        assert beta >= ppo_penalty.BETA_MIN
    assert beta == ppo_penalty.BETA_MIN == 2.0**-10
    for _ in range(10):
        beta = ppo_penalty.adapt_beta(beta, 1.0, 0.01)
    assert beta == 1.0
    for _ in range(5000):  # it overshoots, update after update
        beta = ppo_penalty.adapt_beta(beta, 1.0, 0.01)
    assert beta == ppo_penalty.BETA_MAX == 2.0**10
    assert ppo_penalty.adapt_beta(ppo_penalty.BETA_MIN, 0.01, 0.01) == ppo_penalty.BETA_MIN  # on target


def test_adapt_beta_is_a_function_of_plain_numbers():
    new = ppo_penalty.adapt_beta(1.0, 0.5, 0.01)
    assert type(new) is float and new == 2.0


# ----------------------------------------------------------------------------------
# The penalized surrogate (PPO paper eq. 8) on a hand-computed example.
# ----------------------------------------------------------------------------------
def test_kl_penalty_surrogate_value_and_gradient():
    ratio = torch.tensor([1.0, 2.0], requires_grad=True)
    advantages = torch.tensor([1.0, -1.0])
    kl = torch.tensor([0.1, 0.3], requires_grad=True)
    loss = ppo_penalty.kl_penalty_surrogate(ratio, advantages, kl, beta=0.5)
    # objective = mean(1*1, 2*(-1)) - 0.5 * mean(0.1, 0.3) = -0.5 - 0.1 = -0.6; loss = 0.6
    assert loss.item() == pytest.approx(0.6)
    loss.backward()
    # d loss / d r_i = -A_i / N;  d loss / d kl_i = beta / N
    assert torch.allclose(ratio.grad, torch.tensor([-0.5, 0.5]))
    assert torch.allclose(kl.grad, torch.tensor([0.25, 0.25]))


def test_kl_penalty_surrogate_without_penalty_is_the_plain_importance_sampled_objective():
    ratio, advantages, kl = torch.tensor([0.5, 1.5, 1.0]), torch.tensor([2.0, 1.0, -3.0]), torch.ones(3)
    # -(0.5*2 + 1.5*1 + 1*(-3)) / 3 = 0.5/3
    assert ppo_penalty.kl_penalty_surrogate(ratio, advantages, kl, 0.0).item() == pytest.approx(0.5 / 3)


def test_kl_hinge_is_zero_up_to_twice_the_target_then_quadratic():
    hinge = ppo_penalty.kl_hinge
    assert hinge(torch.tensor(0.015), 0.01, 1000.0).item() == 0.0
    assert hinge(torch.tensor(0.02), 0.01, 1000.0).item() == 0.0
    assert hinge(torch.tensor(0.05), 0.01, 1000.0).item() == pytest.approx(1000 * 0.03**2)


# ----------------------------------------------------------------------------------
# The update itself, called directly on a small agent and a made-up batch.
# ----------------------------------------------------------------------------------
def make_batch(agent, size, obs_dim, generator):
    obs = torch.randn(size, obs_dim, generator=generator)  # (B, obs_dim)
    with torch.no_grad():
        dist = agent.distribution(obs)
        actions = dist.sample()
        logprobs, values = dist.log_prob(actions), agent.get_value(obs)
    advantages = torch.randn(size, generator=generator)
    return ppo_penalty.Batch(obs=obs, actions=actions, logprobs=logprobs, values=values,
                             advantages=advantages, returns=advantages + values)


@pytest.mark.parametrize("continuous", [False, True])
def test_update_logs_the_batch_kl_and_adapts_beta_from_it(continuous):
    torch.manual_seed(0)
    agent = ppo_penalty.Agent(obs_shape=(3,), action_dim=2, continuous=continuous, norm_obs=False)
    batch = make_batch(agent, 64, 3, torch.Generator().manual_seed(0))
    args = ppo_penalty.parse_args(["--num-steps", "64", "--num-minibatches", "4", "--update-epochs", "3",
                                   "--total-timesteps", "64", "--learning-rate", "0.01"])
    with torch.no_grad():
        old = agent.distribution(batch.obs)
        old = (old.base_dist.loc.clone(), old.base_dist.scale.clone()) if continuous else old.probs.clone()
    optimizers, state = ppo_penalty.make_learner(agent, args)
    stats = ppo_penalty.update(agent, optimizers, state, batch, args, 0.0)

    # An independent KL: closed forms, summed over action dimensions for the Gaussian.
    with torch.no_grad():
        new = agent.distribution(batch.obs)
        if continuous:
            (mu0, s0), mu1, s1 = old, new.base_dist.loc, new.base_dist.scale
            kl = (torch.log(s1 / s0) + (s0**2 + (mu0 - mu1) ** 2) / (2 * s1**2) - 0.5).sum(-1)
        else:
            kl = (old * (old.log() - new.probs.log())).sum(-1)
    assert stats["kl"] == pytest.approx(kl.mean().item(), rel=1e-4)
    assert stats["kl"] > 0
    assert stats["beta"] == 1.0 and stats["epochs"] == 3
    assert state["beta"] == stats["next_beta"] == ppo_penalty.adapt_beta(1.0, stats["kl"], args.kl_target)


def test_fixed_beta_and_early_stop():
    torch.manual_seed(0)
    agent = ppo_penalty.Agent(obs_shape=(3,), action_dim=2, continuous=False, norm_obs=False)
    batch = make_batch(agent, 64, 3, torch.Generator().manual_seed(1))
    # A KL target so low that any move exceeds it (yet above the float32 rounding of
    # KL(pi_old || pi_old), about 1e-8): adaptive beta would double, and the early stop
    # fires on the first minibatch after the policy moved.
    args = ppo_penalty.parse_args(["--num-steps", "64", "--num-minibatches", "4", "--update-epochs", "5",
                                   "--total-timesteps", "64", "--no-adaptive-beta", "--beta-init", "3",
                                   "--kl-target", "1e-6", "--kl-stop-factor", "1", "--learning-rate", "0.01"])
    optimizers, state = ppo_penalty.make_learner(agent, args)
    stats = ppo_penalty.update(agent, optimizers, state, batch, args, 0.0)
    assert state == {"beta": 3.0}
    assert stats["beta"] == stats["next_beta"] == 3.0
    assert stats["epochs"] == 1


def test_the_kl_stop_takes_no_step_from_a_policy_past_the_cutoff(monkeypatch):
    """DPPO's workers test the KL before they step: once a minibatch measures a KL past
    the cutoff, that minibatch's step is not taken (the review's instrumented run took it)."""
    torch.manual_seed(0)
    agent = ppo_penalty.Agent(obs_shape=(3,), action_dim=2, continuous=False, norm_obs=False)
    batch = make_batch(agent, 64, 3, torch.Generator().manual_seed(1))
    args = ppo_penalty.parse_args(["--num-steps", "64", "--num-minibatches", "4", "--update-epochs", "10",
                                   "--total-timesteps", "64", "--kl-target", "0.002", "--kl-stop-factor", "1",
                                   "--kl-hinge-coef", "0", "--learning-rate", "0.01"])
    measured, kl_before_step = [], []  # each minibatch's KL; the last one measured before each step
    minibatch_loss = ppo_penalty.minibatch_loss

    def recording(*a, **kw):
        loss, parts = minibatch_loss(*a, **kw)
        measured.append(parts[3].item())
        return loss, parts

    monkeypatch.setattr(ppo_penalty, "minibatch_loss", recording)
    optimizers, state = ppo_penalty.make_learner(agent, args)
    optimizers["adam"].register_step_pre_hook(lambda *_: kl_before_step.append(measured[-1]))
    stats = ppo_penalty.update(agent, optimizers, state, batch, args, 0.0)
    assert stats["epochs"] < 10 and measured[-1] > 0.002  # the stop fired ...
    assert len(kl_before_step) == len(measured) - 1  # ... and its minibatch took no step
    assert max(kl_before_step) <= 0.002


def test_select_rows_is_the_distribution_of_those_rows():
    torch.manual_seed(0)
    obs, index = torch.randn(10, 3), torch.tensor([7, 2, 2, 5])
    for continuous in (False, True):
        agent = ppo_penalty.Agent(obs_shape=(3,), action_dim=2, continuous=continuous, norm_obs=False)
        with torch.no_grad():
            whole, part = agent.distribution(obs), agent.distribution(obs[index])
            picked = ppo_penalty.select_rows(whole, index)
            actions = part.sample()
            assert torch.allclose(picked.log_prob(actions), part.log_prob(actions))
            assert torch.allclose(torch.distributions.kl_divergence(picked, part), torch.zeros(4), atol=1e-6)


# ----------------------------------------------------------------------------------
# Real runs, through the command line.
# ----------------------------------------------------------------------------------
THREE_UPDATES = [*TINY, "--total-timesteps", "192"]  # one more update than TINY: beta changes twice


@pytest.mark.parametrize("kl_target, factor", [("1e-9", 2.0), ("100", 0.5)])
def test_beta_moves_toward_the_kl_target(tmp_path, kl_target, factor):
    """A target no update can stay under doubles beta every time; one no update
    can reach halves it."""
    result = run_script("ppo_penalty", *THREE_UPDATES, "--kl-target", kl_target, "--run-dir", "run",
                        cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = read_csv(tmp_path / "run" / "progress.csv")
    betas = [float(r["beta"]) for r in rows]
    assert betas == [1.0, factor, factor**2]
    assert [float(r["next_beta"]) for r in rows] == [factor, factor**2, factor**3]
    assert all(float(r["kl"]) > 0 for r in rows)


def test_beta_stops_at_its_floor_in_a_run_whose_kl_never_reaches_the_target(tmp_path):
    updates = 14  # four past the ten halvings that take beta from 1 to BETA_MIN
    result = run_script("ppo_penalty", "--num-steps", "16", "--num-minibatches", "2", "--update-epochs", "1",
                        "--total-timesteps", 16 * updates, "--kl-target", "100", "--run-dir", "run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    betas = [float(r["next_beta"]) for r in read_csv(tmp_path / "run" / "progress.csv")]
    assert betas == [max(0.5**k, ppo_penalty.BETA_MIN) for k in range(1, updates + 1)]


def test_no_adaptive_beta_keeps_beta_init(tmp_path):
    result = run_script("ppo_penalty", *THREE_UPDATES, "--kl-target", "1e-9", "--no-adaptive-beta",
                        "--beta-init", "0.3", "--run-dir", "run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = read_csv(tmp_path / "run" / "progress.csv")
    assert {(float(r["beta"]), float(r["next_beta"])) for r in rows} == {(0.3, 0.3)}


def test_resume_restores_beta(tmp_path):
    first = run_script("ppo_penalty", *TINY, "--kl-target", "1e-9", "--run-dir", "run", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    checkpoint = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    assert checkpoint["algorithm_state"] == {"beta": 4.0}  # doubled after each of two updates
    resumed = run_script("ppo_penalty", "--resume", "run", "--total-timesteps", "192", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    rows = read_csv(tmp_path / "run" / "progress.csv")
    assert [float(r["beta"]) for r in rows] == [1.0, 2.0, 4.0]


@pytest.mark.parametrize("flags", [["--kl-target", "0"], ["--beta-init", "0"], ["--beta-init", "-1"],
                                   ["--kl-hinge-coef", "-1"], ["--kl-stop-factor", "0"],
                                   ["--clip-coef", "0.2"]])
def test_bad_penalty_settings_are_one_line_errors(tmp_path, flags):
    result = run_script("ppo_penalty", *TINY, *flags, "--run-dir", tmp_path / "run", cwd=tmp_path)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()
