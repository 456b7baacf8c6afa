"""Rollout collection: time limits bootstrap, terminations do not."""

import numpy as np
import pytest
import torch

import tests.toy_envs  # noqa: F401  (registers the toy environments)

GAMMA, VALUE = 0.9, 2.0


def constant_value_agent(module):
    agent = module.Agent(obs_shape=(2,), action_dim=2, continuous=False, norm_obs=False)
    with torch.no_grad():
        agent.critic[-1].weight.zero_()
        agent.critic[-1].bias.fill_(VALUE)  # V(s) = 2 for every state
    return agent


def test_time_limit_bootstraps_and_termination_does_not(module):
    targets = {}
    for env_id in ("CorridorTimeLimit-v0", "CorridorTerminates-v0"):
        envs = module.make_vector_env(env_id, num_envs=2)
        try:
            obs = module.seed_everything(0, envs)
            tracker = module.EpisodeTracker(2, global_step=100, steps_per_call=2)
            buf, obs = module.collect_rollout(envs, constant_value_agent(module), obs, 12, GAMMA, tracker)
            finished = tracker.finished
        finally:
            envs.close()
        # Episodes of 5 steps end at steps 4 and 9 in both envs; each returned 5.0 raw.
        assert buf.dones[:, 0].nonzero().flatten().tolist() == [4, 9]
        assert finished == [(110, 5.0, 5), (110, 5.0, 5), (120, 5.0, 5), (120, 5.0, 5)]
        assert obs.tolist() == [[2.0, 1.0], [2.0, 1.0]]  # two steps into the third episode
        assert buf.next_value.tolist() == [VALUE, VALUE]  # V of the observation after the last step
        batch = module.make_batch(buf, None, GAMMA, gae_lambda=1.0)
        targets[env_id] = batch.returns.reshape(12, 2)[:, 0]
        bootstrap = buf.bootstrap[:, 0]
        expected = GAMMA * VALUE if env_id == "CorridorTimeLimit-v0" else 0.0
        assert bootstrap[[4, 9]].tolist() == pytest.approx([expected, expected])
        assert bootstrap.count_nonzero() == (2 if expected else 0)
    # Value target of the last step of an episode: r + gamma V(s_final) when cut by the time limit, r when terminal.
    assert targets["CorridorTimeLimit-v0"][4].item() == pytest.approx(1 + GAMMA * VALUE)
    assert targets["CorridorTerminates-v0"][4].item() == pytest.approx(1.0)
    # The first step's target discounts everything up to the episode end, and never crosses into the next one.
    np.testing.assert_allclose(targets["CorridorTerminates-v0"][0].item(), sum(GAMMA**k for k in range(5)), rtol=1e-6)


def test_box_actions_are_clipped_for_the_env_only(module):
    """The log-prob stored is that of the unclipped Gaussian sample."""
    envs = module.make_vector_env("Pendulum-v1", num_envs=1)
    try:
        obs = module.seed_everything(0, envs)
        agent = module.Agent(obs_shape=(3,), action_dim=1, continuous=True)
        with torch.no_grad():
            agent.actor_logstd.fill_(2.0)  # std 7.4 on a [-2, 2] action range: most samples are out of bounds
        buf, _ = module.collect_rollout(envs, agent, obs, 64, 0.99, module.EpisodeTracker(1, 0, 1))
    finally:
        envs.close()
    assert buf.actions.abs().max() > 2.0
    with torch.no_grad():
        logprob = agent.distribution(buf.obs[:, 0]).log_prob(buf.actions[:, 0])
    assert torch.allclose(logprob, buf.logprobs[:, 0])


def test_warm_up_seeds_the_normalizer_before_the_rollout_is_scored(module):
    """A fresh run's first rollout: the normalizer learns its statistics from it, and the
    log-probs, values and time-limit bootstraps are computed with them, so pi_old is
    exactly the policy the first update starts from (its ratio starts at 1)."""
    envs = module.make_vector_env("CorridorTimeLimit-v0", num_envs=2)
    try:
        obs = module.seed_everything(0, envs)
        agent = module.Agent(obs_shape=(2,), action_dim=2, continuous=False)
        buf, last = module.collect_rollout(envs, agent, obs, 12, GAMMA, module.EpisodeTracker(2, 0, 2),
                                           warm_up=True)
    finally:
        envs.close()
    flat = buf.obs.flatten(0, 1).double()  # t = 0..4, 0..4, 0, 1 in each env
    assert agent.obs_rms.count.item() == pytest.approx(24, abs=1e-3)
    torch.testing.assert_close(agent.obs_rms.mean.double(), flat.mean(0))
    torch.testing.assert_close(agent.obs_rms.var.double(), flat.var(0, unbiased=False))
    with torch.no_grad():
        logprobs = agent.distribution(buf.obs.flatten(0, 1)).log_prob(buf.actions.flatten(0, 1))
        values = agent.get_value(buf.obs.flatten(0, 1)).view(12, 2)
        next_value = agent.get_value(torch.as_tensor(last, dtype=torch.float32))
        final_value = agent.get_value(torch.tensor([[5.0, 1.0]])).item()  # s_final, cut at t = 5
    assert torch.equal(logprobs.view(12, 2), buf.logprobs)  # ratio = exp(0) = 1, exactly
    torch.testing.assert_close(values, buf.values)
    torch.testing.assert_close(next_value, buf.next_value)
    assert buf.bootstrap[[4, 9]].flatten().tolist() == pytest.approx([GAMMA * final_value] * 4)
    assert buf.bootstrap.count_nonzero() == 4


def test_without_warm_up_the_rollout_leaves_the_normalizer_alone(module):
    envs = module.make_vector_env("CartPole-v1", num_envs=1)
    try:
        obs = module.seed_everything(0, envs)
        agent = module.Agent(obs_shape=(4,), action_dim=2, continuous=False)
        before = {k: v.clone() for k, v in agent.state_dict().items()}
        module.collect_rollout(envs, agent, obs, 32, GAMMA, module.EpisodeTracker(1, 0, 1))
    finally:
        envs.close()
    assert all(torch.equal(before[k], v) for k, v in agent.state_dict().items())
