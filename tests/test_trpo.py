"""Tests of what trpo.py alone does: conjugate gradient, the Fisher-vector
product, the line search, the value fit and the logged step diagnostics. The
behaviour it shares with the other scripts, learning CartPole-v1 and
Pendulum-v1 with the defaults included, is tested in the shared tests over
every script in conftest.SCRIPTS.

Pure functions are checked against independent references: torch.linalg.solve
for conjugate gradient, torch.autograd.functional.hessian for the Fisher-vector
product.
"""

import csv

import numpy as np
import pytest
import torch

from tests.conftest import load, run_script, tiny

trpo = load("trpo")

TRPO_TINY = tiny("trpo")


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def random_spd(n, generator, low=1.0, high=10.0):
    """Q diag(eigenvalues) Q^T with eigenvalues in [low, high]: condition number <= high / low."""
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=torch.float64))
    eigenvalues = torch.empty(n, dtype=torch.float64).uniform_(low, high, generator=generator)
    return q @ torch.diag(eigenvalues) @ q.T


# ---------------------------------------------------------------- conjugate gradient
@pytest.mark.parametrize("n, seed", [(2, 0), (5, 1), (20, 2), (50, 3)])
def test_conjugate_gradient_solves_spd_systems(n, seed):
    gen = torch.Generator().manual_seed(seed)
    a = random_spd(n, gen)
    b = torch.randn(n, generator=gen, dtype=torch.float64)
    expected = torch.linalg.solve(a, b)
    a32, b32 = a.float(), b.float()
    x, products = trpo.conjugate_gradient(lambda v: a32 @ v, b32, iters=2 * n, residual_tol=1e-12)
    torch.testing.assert_close(x.double(), expected, rtol=1e-4, atol=1e-5)
    assert 1 <= products <= 2 * n


def test_conjugate_gradient_first_iterate_is_the_scaled_right_hand_side():
    """One iteration from x = 0 minimizes the quadratic along b: x = (b.b / b.Ab) b."""
    gen = torch.Generator().manual_seed(4)
    a = random_spd(8, gen).float()
    b = torch.randn(8, generator=gen)
    x, products = trpo.conjugate_gradient(lambda v: a @ v, b, iters=1, residual_tol=0.0)
    torch.testing.assert_close(x, (b @ b) / (b @ a @ b) * b)
    assert products == 1


def test_conjugate_gradient_stops_at_the_residual_tolerance():
    calls = []
    a = torch.diag(torch.tensor([1.0, 2.0, 3.0]))

    def avp(v):
        calls.append(v)
        return a @ v

    x, products = trpo.conjugate_gradient(avp, torch.zeros(3), iters=10, residual_tol=1e-10)
    assert torch.equal(x, torch.zeros(3)) and calls == [] and products == 0  # b = 0: x = 0 at once
    x, products = trpo.conjugate_gradient(avp, torch.ones(3), iters=10, residual_tol=1e-10)
    assert products == len(calls) == 3  # exact in 3 steps on a 3 x 3 system: then r = 0 stops it


@pytest.mark.parametrize("matrix", [-torch.eye(4), torch.zeros(4, 4), torch.full((4, 4), float("nan"))],
                         ids=["negative-definite", "zero", "nan"])
def test_conjugate_gradient_stops_on_non_positive_or_nan_curvature(matrix):
    x, products = trpo.conjugate_gradient(lambda v: matrix @ v, torch.ones(4), iters=10, residual_tol=1e-10)
    assert torch.equal(x, torch.zeros(4))  # no step was taken along a direction of bad curvature
    assert products == 1  # the product that found it


# ---------------------------------------------------------------- Fisher-vector product
def tiny_agent(continuous, seed=0):
    torch.manual_seed(seed)
    agent = trpo.Agent(obs_shape=(3,), action_dim=2, continuous=continuous, hidden_sizes=(4,), norm_obs=False)
    if continuous:
        with torch.no_grad():
            agent.actor_logstd.copy_(torch.tensor([-0.3, 0.2]))
    # Larger policy-head weights than the 0.01 init, so the distributions differ across states.
    with torch.no_grad():
        agent.actor[-1].weight.mul_(100.0)
    return agent


def kl_of_flat_parameters(agent, obs, old_dist):
    """theta (P,) -> mean KL[pi_old || pi_theta], rebuilt from the agent's layers with
    torch.func.functional_call: a reference that does not use the code under test."""
    named = [(name, p) for name, p in agent.named_parameters() if not name.startswith("critic.")]

    def kl(theta):
        values, offset = {}, 0
        for name, p in named:
            values[name] = theta[offset:offset + p.numel()].view_as(p)
            offset += p.numel()
        actor = {k[len("actor."):]: v for k, v in values.items() if k.startswith("actor.")}
        out = torch.func.functional_call(agent.actor.double(), actor, (obs,))
        if agent.continuous:
            std = values["actor_logstd"].exp().expand_as(out)
            new = torch.distributions.Independent(torch.distributions.Normal(out, std), 1)
        else:
            new = torch.distributions.Categorical(logits=out)
        return torch.distributions.kl_divergence(old_dist, new).mean()

    return kl


@pytest.mark.parametrize("continuous", [False, True], ids=["categorical", "gaussian"])
@pytest.mark.parametrize("damping", [0.0, 0.1])
def test_fisher_vector_product_matches_the_explicit_kl_hessian(continuous, damping):
    agent = tiny_agent(continuous)
    obs = torch.randn(16, 3, generator=torch.Generator().manual_seed(5))  # (B, obs_dim)
    params = trpo.policy_parameters(agent)
    theta = trpo.flat_params(params)  # (P,)

    # Reference: the full (P, P) Hessian of the KL, in float64, by torch's own routine.
    with torch.no_grad():
        old64 = tiny_agent(continuous).double().distribution(obs.double())
    hessian = torch.autograd.functional.hessian(kl_of_flat_parameters(tiny_agent(continuous), obs.double(), old64),
                                                theta.double())

    # Code under test, in float32 on the real agent.
    with torch.no_grad():
        old = agent.distribution(obs)
    kl_grad = trpo.flat_grad(trpo.mean_kl(old, agent.distribution(obs)), params, create_graph=True)
    for seed in range(3):
        v = torch.randn(theta.numel(), generator=torch.Generator().manual_seed(seed))
        fv = trpo.fisher_vector_product(kl_grad, params, v, damping)
        torch.testing.assert_close(fv.double(), hessian @ v.double() + damping * v.double(),
                                   rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- line search
def quadratic_problem(gain_direction):
    """A one-parameter-vector problem with known answers: KL = |theta|^2, gain = c . theta."""
    theta = torch.zeros(3)

    def evaluate():
        return float(gain_direction @ theta), float(theta @ theta)

    return [theta], evaluate


def test_line_search_accepts_the_first_step_within_the_bound():
    params, evaluate = quadratic_problem(torch.tensor([1.0, 0.0, 0.0]))
    full_step = torch.tensor([1.0, 0.0, 0.0])  # KL 1, 0.25, 0.0625 at fractions 1, 0.5, 0.25
    accepted, backtracks, gain, kl = trpo.backtracking_line_search(
        params, full_step, evaluate, max_kl=0.1, backtrack_coef=0.5, backtrack_iters=10)
    assert (accepted, backtracks, gain, kl) == (True, 2, 0.25, 0.0625)
    assert torch.equal(params[0], torch.tensor([0.25, 0.0, 0.0]))


def test_line_search_rejects_a_step_that_lowers_the_surrogate():
    params, evaluate = quadratic_problem(torch.tensor([-1.0, 0.0, 0.0]))  # every step along +x loses
    result = trpo.backtracking_line_search(params, torch.tensor([0.1, 0.0, 0.0]), evaluate, max_kl=1.0,
                                           backtrack_coef=0.5, backtrack_iters=4)
    assert result == (False, 4, 0.0, 0.0)
    assert torch.equal(params[0], torch.zeros(3))


def test_line_search_rejects_a_kl_breaking_step_and_restores_parameters_bit_for_bit():
    agent = tiny_agent(continuous=True)
    obs = torch.randn(32, 3, generator=torch.Generator().manual_seed(6))
    params = trpo.policy_parameters(agent)
    before = [p.detach().clone() for p in params]
    with torch.no_grad():
        old = agent.distribution(obs)

    def evaluate():
        with torch.no_grad():
            return 1.0, trpo.mean_kl(old, agent.distribution(obs)).item()  # a gain that always "improves"

    huge = 100.0 * torch.randn(trpo.flat_params(params).numel(), generator=torch.Generator().manual_seed(7))
    accepted, backtracks, gain, kl = trpo.backtracking_line_search(
        params, huge, evaluate, max_kl=0.01, backtrack_coef=0.8, backtrack_iters=5)
    assert (accepted, backtracks, gain, kl) == (False, 5, 0.0, 0.0)
    for p, q in zip(params, before):
        assert torch.equal(p.detach().view(torch.int32), q.view(torch.int32))


def test_flat_parameter_helpers_round_trip():
    agent = tiny_agent(continuous=True)
    params = trpo.policy_parameters(agent)
    flat = trpo.flat_params(params)
    assert flat.shape == (sum(p.numel() for p in params),)
    trpo.set_flat_params(params, torch.arange(flat.numel(), dtype=torch.float32))
    assert torch.equal(trpo.flat_params(params), torch.arange(flat.numel(), dtype=torch.float32))
    assert torch.equal(params[0].detach().reshape(-1), torch.arange(params[0].numel(), dtype=torch.float32))
    flat[0] += 1.0  # flat_params is a copy: changing it leaves the parameters alone
    assert params[0].detach().reshape(-1)[0] == 0.0


# ---------------------------------------------------------------- value function
def test_value_fit_moves_only_the_critic_and_lowers_its_loss():
    agent = tiny_agent(continuous=False)
    gen = torch.Generator().manual_seed(8)
    obs = torch.randn(64, 3, generator=gen)
    returns = obs @ torch.tensor([1.0, -2.0, 0.5])  # a target the critic can learn
    batch = trpo.Batch(obs=obs, actions=torch.zeros(64, dtype=torch.long), logprobs=torch.zeros(64),
                       values=torch.zeros(64), advantages=torch.zeros(64), returns=returns)
    policy_before = trpo.flat_params(trpo.policy_parameters(agent))
    critic_before = trpo.flat_params(list(agent.critic.parameters()))
    with torch.no_grad():
        loss_before = trpo.value_loss(agent.get_value(obs), returns).item()
    optimizer = trpo.make_learner(agent, trpo.parse_args(["--vf-learning-rate", "0.01"]))[0]["value_adam"]
    trpo.fit_value_function(agent, optimizer, batch, epochs=50, num_minibatches=4)
    with torch.no_grad():
        loss_after = trpo.value_loss(agent.get_value(obs), returns).item()
    assert torch.equal(trpo.flat_params(trpo.policy_parameters(agent)), policy_before)
    assert not torch.equal(trpo.flat_params(list(agent.critic.parameters())), critic_before)
    assert loss_after < 0.5 * loss_before


# ---------------------------------------------------------------- update
STATS = {"kl", "surrogate_improvement", "expected_improvement", "backtracks", "step_accepted", "step_norm",
         "cg_residual", "cg_iters", "trunk_kl_share", "value_loss", "entropy"}


def random_batch(agent, advantages):
    obs, actions = torch.randn(64, 3), torch.randint(0, 2, (64,))
    with torch.no_grad():
        logprobs, values = agent.distribution(obs).log_prob(actions), agent.get_value(obs)
    return trpo.Batch(obs, actions, logprobs, values, advantages=advantages, returns=torch.randn(64))


def tiny_update_args(*extra):
    return trpo.parse_args(["--num-steps", "64", "--num-minibatches", "4", "--total-timesteps", "64", *extra])


def test_update_takes_a_step_within_the_bound_and_reports_it():
    torch.manual_seed(0)
    agent = trpo.Agent((3,), 2, continuous=False)
    batch = random_batch(agent, torch.randn(64))
    args = tiny_update_args("--max-kl", "0.005")
    before = trpo.flat_params(trpo.policy_parameters(agent))
    stats = trpo.update(agent, *trpo.make_learner(agent, args), batch, args, progress=0.0)
    assert set(stats) == STATS
    assert stats["step_accepted"] == 1 and 0.0 < stats["kl"] <= 0.005 and stats["surrogate_improvement"] > 0
    step = trpo.flat_params(trpo.policy_parameters(agent)) - before
    assert stats["step_norm"] == pytest.approx(step.norm().item())
    assert 1 <= stats["cg_iters"] <= args.cg_iters and 0 < stats["trunk_kl_share"] < 1


@pytest.mark.parametrize("continuous", [False, True])
def test_the_trunk_is_all_the_policy_but_its_last_layer_and_log_std(continuous):
    agent = trpo.Agent((3,), 2, continuous=continuous, hidden_sizes=(4, 5))
    names = [name for name, p in agent.named_parameters() if not name.startswith("critic.")]
    params = trpo.policy_parameters(agent)
    sizes = [p.numel() for p in params]
    mask = trpo.on_trunk(agent, params).split(sizes)
    on_head = {"actor.4.weight", "actor.4.bias", "actor_logstd"}  # Linear, Tanh, Linear, Tanh, Linear
    assert [bool(m.all()) for m in mask] == [name not in on_head for name in names]
    assert all(m.all() or not m.any() for m in mask)


def test_update_with_a_zero_gradient_rejects_the_step_and_stays_finite():
    """Equal advantages normalize to zeros: g = 0, so there is no direction to move in."""
    torch.manual_seed(0)
    agent = trpo.Agent((3,), 2, continuous=False)
    batch = random_batch(agent, torch.ones(64))
    args = tiny_update_args()
    before = trpo.flat_params(trpo.policy_parameters(agent))
    stats = trpo.update(agent, *trpo.make_learner(agent, args), batch, args, progress=0.0)
    assert set(stats) == STATS and all(np.isfinite(v) for v in stats.values())
    assert stats["step_accepted"] == 0 and stats["step_norm"] == 0.0
    assert torch.equal(trpo.flat_params(trpo.policy_parameters(agent)), before)


# ---------------------------------------------------------------- the script
@pytest.mark.parametrize("env, extra", [("CartPole-v1", []), ("Pendulum-v1", ["--fvp-subsample", "0.1"])])
def test_every_accepted_step_keeps_the_kl_bound_and_improves_the_surrogate(tmp_path, env, extra):
    max_kl = 0.01
    result = run_script("trpo", "--env", env, "--num-steps", "256", "--total-timesteps", "2048",
                        "--max-kl", max_kl, "--run-dir", tmp_path / "run", *extra, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = read_csv(tmp_path / "run" / "progress.csv")
    assert len(rows) == 8
    accepted = [r for r in rows if r["step_accepted"] == "1"]
    assert accepted, "no step was accepted in 8 updates"
    for row in accepted:
        assert 0.0 <= float(row["kl"]) <= max_kl * (1 + 1e-6)
        assert float(row["surrogate_improvement"]) >= 0.0
        assert float(row["step_norm"]) > 0.0
    for row in rows:
        if row["step_accepted"] == "0":
            assert float(row["step_norm"]) == 0.0 and float(row["kl"]) == 0.0


def test_no_line_search_takes_the_full_natural_gradient_step(tmp_path):
    result = run_script("trpo", *TRPO_TINY, "--no-line-search", "--run-dir", tmp_path / "run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = read_csv(tmp_path / "run" / "progress.csv")
    assert rows and all(r["step_accepted"] == "1" and r["backtracks"] == "0" for r in rows)
    # g . F^-1 g > 0 for positive definite F: the unchecked step still points uphill to first order.
    assert all(float(r["expected_improvement"]) > 0.0 for r in rows)


@pytest.mark.parametrize("flags", [["--fvp-subsample", "1.5"], ["--fvp-subsample", "0"],
                                   ["--backtrack-coef", "1"], ["--cg-iters", "0"], ["--max-kl", "-0.1"]])
def test_bad_trpo_settings_are_one_line_errors(tmp_path, flags):
    result = run_script("trpo", *TRPO_TINY, *flags, "--run-dir", tmp_path / "run", cwd=tmp_path)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("continuous", [False, True])
def test_policy_parameters_are_all_but_the_critic(continuous):
    agent = trpo.Agent(obs_shape=(3,), action_dim=2, continuous=continuous)
    policy = {id(p) for p in trpo.policy_parameters(agent)}
    critic = {id(p) for p in agent.critic.parameters()}
    assert policy.isdisjoint(critic) and len(policy) + len(critic) == len(list(agent.parameters()))
    assert (id(agent.actor_logstd) in policy) if continuous else not hasattr(agent, "actor_logstd")
