"""GAE and reward scaling against independent references."""

import numpy as np
import pytest
import torch


def naive_gae(rewards, values, dones, next_value, gamma, lam):
    """Forward sum A_t = sum_l (gamma*lam)^l delta_{t+l}, stopping after the step where the episode ends.

    Written as the definition (GAE paper eq. 16 truncated at episode ends), not as the recursion."""
    T, N = rewards.shape
    values_next = np.vstack([values[1:], next_value[None]])
    delta = rewards + gamma * values_next * (1 - dones) - values
    adv = np.zeros((T, N))
    for n in range(N):
        for t in range(T):
            total, weight = 0.0, 1.0
            for k in range(t, T):
                total += weight * delta[k, n]
                if dones[k, n]:
                    break
                weight *= gamma * lam
            adv[t, n] = total
    return adv


@pytest.mark.parametrize("gamma,lam", [(0.99, 0.95), (0.9, 0.0), (0.97, 1.0), (1.0, 1.0)])
def test_gae_matches_naive_definition(module, gamma, lam):
    rng = np.random.default_rng(0)
    T, N = 12, 3
    rewards, values, next_value = rng.normal(size=(T, N)), rng.normal(size=(T, N)), rng.normal(size=N)
    dones = np.zeros((T, N))
    dones[4, 0] = dones[T - 1, 1] = dones[0, 2] = dones[7, 2] = 1  # middle, last step, first step
    adv, ret = module.compute_gae(*(torch.tensor(x) for x in (rewards, values, dones, next_value)), gamma, lam)
    expected = naive_gae(rewards, values, dones, next_value, gamma, lam)
    np.testing.assert_allclose(adv.numpy(), expected, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(ret.numpy(), expected + values, rtol=1e-10, atol=1e-10)


def test_gae_special_cases(module):
    """lambda = 0 is the one-step TD error; lambda = 1 is the discounted return minus V."""
    rewards = torch.tensor([[1.0], [2.0], [3.0]])
    values = torch.tensor([[0.5], [0.25], [-1.0]])
    dones = torch.zeros(3, 1)
    next_value = torch.tensor([4.0])
    adv0, _ = module.compute_gae(rewards, values, dones, next_value, 0.5, 0.0)
    assert adv0.squeeze(1).tolist() == [1 + 0.5 * 0.25 - 0.5, 2 + 0.5 * -1 - 0.25, 3 + 0.5 * 4 - (-1)]
    _, ret1 = module.compute_gae(rewards, values, dones, next_value, 0.5, 1.0)
    assert ret1[0, 0].item() == pytest.approx(1 + 0.5 * 2 + 0.25 * 3 + 0.125 * 4)
    dones[1, 0] = 1.0  # the episode ends at step 1: step 2's reward and the bootstrap drop out of step 0
    _, ret1 = module.compute_gae(rewards, values, dones, next_value, 0.5, 1.0)
    assert ret1[0, 0].item() == pytest.approx(1 + 0.5 * 2)


def test_reward_scaler_uses_std_of_discounted_return(module):
    gamma = 0.9
    rewards = torch.tensor([[1.0, 2.0], [3.0, -1.0], [0.5, 0.0], [2.0, 1.0]])  # (T, N)
    dones = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0], [0.0, 1.0]])
    scaler = module.RewardScaler(num_envs=2, gamma=gamma, clip=100.0)
    scaler.observe(rewards, dones)
    discounted = []  # by hand: per env, G <- gamma * G + r, reset after an episode ends
    for n in range(2):
        g = 0.0
        for t in range(4):
            g = gamma * g + rewards[t, n].item()
            discounted.append(g)
            if dones[t, n]:
                g = 0.0
    std = np.std(discounted)
    np.testing.assert_allclose(scaler.scale(rewards).numpy(), rewards.numpy() / std, rtol=1e-5)
    assert module.RewardScaler(1, gamma, clip=0.5).scale(torch.tensor([[3.0]])).item() == 0.5
