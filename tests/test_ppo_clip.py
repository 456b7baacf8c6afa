"""PPO-clip's own pieces, checked against values computed by hand."""

import pytest
import torch

from tests.conftest import load

ppo_clip = load("ppo_clip")


def test_clipped_surrogate_values():
    ratio = torch.tensor([0.5, 1.1, 1.5, 0.7, 1.0])
    adv = torch.tensor([1.0, 2.0, 1.0, -1.0, -3.0])
    # min(r A, clip(r, 0.8, 1.2) A) per sample:
    # 0.5*1 vs 0.8*1 -> 0.5; 1.1*2 vs 1.1*2 -> 2.2; 1.5 vs 1.2 -> 1.2; -0.7 vs -0.8 -> -0.8; -3 vs -3 -> -3
    expected = -(0.5 + 2.2 + 1.2 - 0.8 - 3.0) / 5
    assert ppo_clip.clipped_surrogate(ratio, adv, 0.2).item() == pytest.approx(expected)


def test_clipped_surrogate_gradient_is_zero_where_clipped():
    ratio = torch.tensor([1.5, 0.5, 1.5, 0.5, 1.1], requires_grad=True)
    adv = torch.tensor([1.0, -1.0, -1.0, 1.0, 1.0])
    ppo_clip.clipped_surrogate(ratio, adv, 0.2).backward()
    # Clipped (no incentive to move further): positive A above 1+eps, negative A below 1-eps.
    # Not clipped: the pessimistic side (r A smaller) and inside the range: d/dr = -A / n.
    assert ratio.grad.tolist() == pytest.approx([0.0, 0.0, 1 / 5, -1 / 5, -1 / 5])


def test_value_loss_with_and_without_clipping():
    new, old, ret = torch.tensor([2.0, 0.0]), torch.tensor([1.0, 0.0]), torch.tensor([3.0, 1.0])
    assert ppo_clip.value_loss(new, old, ret).item() == pytest.approx(0.5 * (1 + 1) / 2)
    # Clipped: sample 0 may move only to 1.2 -> error 1.8^2 is larger than 1^2, so it counts.
    assert ppo_clip.value_loss(new, old, ret, 0.2).item() == pytest.approx(0.5 * (1.8**2 + 1) / 2)


def test_normalize_advantages_is_safe_for_one_sample():
    assert ppo_clip.normalize_advantages(torch.tensor([3.0])).tolist() == [3.0]
    out = ppo_clip.normalize_advantages(torch.tensor([1.0, 2.0, 3.0, 6.0]))
    assert out.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert out.std().item() == pytest.approx(1.0, abs=1e-6)
    assert torch.all(torch.isfinite(ppo_clip.normalize_advantages(torch.ones(4))))


def test_update_reports_its_diagnostics_and_honours_target_kl():
    torch.manual_seed(0)
    agent = ppo_clip.Agent((3,), 2, continuous=False)
    obs, actions = torch.randn(64, 3), torch.randint(0, 2, (64,))
    with torch.no_grad():
        logprobs, values = agent.distribution(obs).log_prob(actions), agent.get_value(obs)
    batch = ppo_clip.Batch(obs, actions, logprobs, values, advantages=torch.randn(64), returns=torch.randn(64))
    args = ppo_clip.parse_args(["--num-steps", "64", "--num-minibatches", "4", "--total-timesteps", "64",
                                "--target-kl", "1e-9", "--learning-rate", "0.01", "--anneal-lr"])
    stats = ppo_clip.update(agent, *ppo_clip.make_learner(agent, args), batch, args, progress=0.5)
    assert stats["epochs"] == 1  # the first epoch already moves the batch's KL past 1e-9
    assert stats["learning_rate"] == pytest.approx(0.005)  # annealed halfway
    assert set(stats) >= {"policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction"}
    # approx_kl is the whole batch's, after the update: E[(r - 1) - log r] over all 64 samples.
    with torch.no_grad():
        logratio = agent.distribution(obs).log_prob(actions) - logprobs
    assert stats["approx_kl"] == pytest.approx((logratio.exp() - 1 - logratio).mean().item(), rel=1e-5)
    args.target_kl = 10.0  # never reached: every epoch runs
    stats = ppo_clip.update(agent, *ppo_clip.make_learner(agent, args), batch, args, progress=0.5)
    assert stats["epochs"] == args.update_epochs
