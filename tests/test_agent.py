"""The actor-critic network and the observation normalizer inside it."""

import numpy as np
import pytest
import torch


def test_running_mean_std_merges_batches_exactly(module):
    rng = np.random.default_rng(0)
    data = rng.normal(3.0, 2.0, size=(1000, 4))
    rms = module.RunningMeanStd((4,))
    for chunk in np.array_split(data, [1, 10, 300, 301]):  # uneven chunks, one of a single row
        rms.update(torch.tensor(chunk))
    np.testing.assert_allclose(rms.mean.numpy(), data.mean(0), rtol=1e-12)
    np.testing.assert_allclose(rms.var.numpy(), data.var(0), rtol=1e-12)
    assert rms.count.item() == 1000


def test_agent_normalizes_inside_and_saves_statistics(module):
    agent = module.Agent(obs_shape=(3,), action_dim=2, continuous=False)
    obs = torch.tensor([[10.0, -5.0, 2.0], [12.0, -7.0, 2.0]])
    agent.obs_rms.update(obs)
    normalized = agent.normalize(obs)
    np.testing.assert_allclose(normalized.numpy(), [[-1, 1, 0], [1, -1, 0]], atol=1e-4)
    assert agent.normalize(torch.tensor([[1e6, 0.0, 0.0]]))[0, 0].item() == agent.obs_clip
    state = agent.state_dict()
    assert {"obs_rms.mean", "obs_rms.var", "obs_rms.count"} <= set(state)
    clone = module.Agent(**agent.config)
    clone.load_state_dict(state)
    assert torch.equal(clone.normalize(obs), normalized)


@pytest.mark.parametrize("continuous", [False, True])
def test_agent_shapes(module, continuous):
    batch, obs_dim, action_dim = 5, 4, 3
    agent = module.Agent((obs_dim,), action_dim, continuous)
    obs = torch.randn(batch, obs_dim)
    dist = agent.distribution(obs)
    action = dist.sample()
    assert action.shape == ((batch, action_dim) if continuous else (batch,))
    assert dist.log_prob(action).shape == dist.entropy().shape == agent.get_value(obs).shape == (batch,)
    assert agent.sample_action(obs).shape == action.shape
    # outputs_from_normalized is the same networks after the normalizer, score the same without grad.
    out, value = agent.outputs_from_normalized(agent.normalize(obs))
    assert torch.equal(value, agent.get_value(obs))
    assert torch.equal(agent.policy_from_output(out).log_prob(action), dist.log_prob(action))
    scored, scored_value = agent.score(obs)
    assert torch.equal(scored.log_prob(action), dist.log_prob(action)) and torch.equal(scored_value, value)
    assert agent.score(obs, value=False)[1] is None


def test_initialization_follows_the_implementation_details(module):
    torch.manual_seed(0)
    agent = module.Agent(obs_shape=(8,), action_dim=2, continuous=True)
    head, value_head, hidden = agent.actor[-1].weight, agent.critic[-1].weight, agent.actor[0].weight
    # Orthogonal rows scaled by the gain: W W^T = gain^2 I (for a wide-enough matrix).
    assert torch.allclose(head @ head.T, 0.01**2 * torch.eye(2), atol=1e-7)
    assert torch.allclose(value_head @ value_head.T, torch.eye(1), atol=1e-5)
    assert torch.allclose(hidden.T @ hidden, 2 * torch.eye(8), atol=1e-5)
    assert all(torch.all(layer.bias == 0) for layer in agent.actor if isinstance(layer, torch.nn.Linear))
    assert torch.all(agent.actor_logstd == 0)
    assert [type(layer) for layer in agent.actor] == [torch.nn.Linear, torch.nn.Tanh] * 2 + [torch.nn.Linear]


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_spaces_are_described_from_the_env(module, env_id):
    spaces = module.check_env(env_id)
    assert spaces == {"CartPole-v1": {"obs_shape": [4], "continuous": False, "action_dim": 2},
                      "Pendulum-v1": {"obs_shape": [3], "continuous": True, "action_dim": 1}}[env_id]


@pytest.mark.parametrize("continuous", [False, True])
def test_sample_action_draws_from_the_policy(module, continuous):
    """The rollout's fast sampler must draw from the same distribution as distribution()."""
    torch.manual_seed(0)
    agent = module.Agent(obs_shape=(2,), action_dim=3, continuous=continuous, norm_obs=False)
    with torch.no_grad():
        agent.actor[-1].bias.copy_(torch.tensor([1.0, 0.0, -1.0]))
        if continuous:
            agent.actor_logstd.copy_(torch.tensor([0.0, -1.0, 0.5]))
    obs = torch.zeros(20000, 2)
    actions = agent.sample_action(obs)
    with torch.no_grad():
        dist = agent.distribution(obs[:1])
    if continuous:
        np.testing.assert_allclose(actions.mean(0), dist.mean[0], atol=0.05)
        np.testing.assert_allclose(actions.std(0), dist.stddev[0], rtol=0.03)
    else:
        freq = torch.bincount(actions, minlength=3).float() / len(actions)
        np.testing.assert_allclose(freq, dist.probs[0], atol=0.015)
