"""How close do k conjugate-gradient iterations come to TRPO's natural gradient?

    python benchmarks/cg_quality.py benchmarks/results/Hopper-v5/trpo/seed1/model.pt

trpo.py solves (F + lambda I) s = g for its step direction with --cg-iters
iterations of conjugate gradient (25 by default; 10 in the TRPO paper), F being
damped by lambda = --cg-damping. This tool loads a
trpo.py checkpoint, plays one batch with its policy, solves the same system
far more precisely (the reference s*), and prints for each k: CG's relative
residual ||F s_k - g|| / ||g||, the cosine between s_k and s*, and the gain
that the linear model predicts for the maximal step along s_k,
sqrt(2 delta / s_k^T F s_k) * g^T s_k, the quantity a TRPO step improves
first. As k grows that gain rises to the natural gradient's; the ratio says how
much of each step's possible progress k iterations leave behind. (F here is the
damped matrix, as in trpo.py, on the run's --fvp-subsample of the batch.) The last
two columns are what trpo.py's line search makes of that maximal step on the whole
batch: the surrogate gain it measures (the linear model's is an upper estimate where
the quadratic KL model is too optimistic), and the backtracks it needed.

It then measures what the damping does to the step's length: trpo.py sizes the
step with s^T (F + lambda I) s, so the quadratic model's KL of the full step is
delta * s^T F s / s^T (F + lambda I) s, below delta. It prints that ratio, the
model's KL and the KL measured after taking the full step.

Uses trpo.py's own functions (GAE, Fisher-vector product, CG) with the
checkpoint's settings. One simplification: an episode cut by the time limit is
treated as ended (no bootstrap), which changes a few advantages of one batch,
not the conditioning of F that this measures.
"""

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: find trpo.py
import trpo  # noqa: E402

REFERENCE_ITERS = 300  # CG iterations for s*: far more than parameters' worth of conditioning needs here
REFERENCE_TOL = 1e-20  # ... and no early stop on the residual
DEFAULT_ITERS = [1, 5, 10, 15, 25, 50, 100]


def play_batch(agent, env_id, steps, seed):
    """`steps` transitions of the stochastic policy in one environment: (obs, actions, rewards, dones)."""
    env = trpo.make_env(env_id)()
    obs, _ = env.reset(seed=seed)
    observations, actions, rewards, dones = [], [], [], []
    for _ in range(steps):
        action = agent.sample_action(torch.as_tensor(obs, dtype=torch.float32)[None])[0]
        observations.append(obs)
        actions.append(action)
        obs, reward, terminated, truncated, _ = env.step(action.numpy())
        rewards.append(reward)
        dones.append(terminated or truncated)
        if terminated or truncated:
            obs, _ = env.reset()
    env.close()
    return (torch.as_tensor(np.array(observations), dtype=torch.float32), torch.stack(actions),
            torch.as_tensor(rewards, dtype=torch.float32), torch.as_tensor(dones, dtype=torch.float32))


class OneLineParser(argparse.ArgumentParser):
    """Bad input gets one line on stderr, not argparse's usage block."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def main(argv=None):
    parser = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="a model.pt written by trpo.py")
    parser.add_argument("--iters", type=int, nargs="+", default=DEFAULT_ITERS,
                        help="CG iteration counts to compare (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the batch (default: %(default)s)")
    parser.add_argument("--reference-iters", type=int, default=REFERENCE_ITERS,
                        help="CG iterations for s* (default: %(default)s; fewer on a CNN, where "
                             "a product takes about a second)")
    args = parser.parse_args(argv)
    try:
        checkpoint = trpo.load_checkpoint(args.checkpoint)
        if checkpoint.get("algorithm") != "trpo":
            raise trpo.UsageError(f"{args.checkpoint} was written by {checkpoint.get('algorithm')}, not trpo.py")
    except trpo.UsageError as error:
        print(f"cg_quality.py: error: {error}", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    settings = checkpoint["settings"]
    agent = trpo.load_agent(args.checkpoint)
    batch_size = settings["num_envs"] * settings["num_steps"]
    obs, actions, rewards, dones = play_batch(agent, settings["env"], batch_size, args.seed)

    # Advantages as trpo.py computes them: rewards signed (Atari) or scaled, GAE, normalized.
    scaled = rewards.sign() if settings.get("sign_rewards") else rewards
    if settings["norm_reward"]:
        scaler = trpo.RewardScaler(1, settings["gamma"], settings["reward_clip"])
        scaler.load_state_dict(checkpoint["reward_scaler"])
        scaled = scaler.scale(scaled)
    with torch.no_grad():
        values = agent.get_value(obs)  # (B,)
    advantages, _ = trpo.compute_gae(scaled[:, None], values[:, None], dones[:, None], torch.zeros(1),
                                     settings["gamma"], settings["gae_lambda"])
    advantages = trpo.normalize_advantages(advantages[:, 0])  # (B,)

    # g and F v exactly as trpo.update builds them.
    params = trpo.policy_parameters(agent)
    with torch.no_grad():
        old_dist = agent.distribution(obs)
        old_logprob = old_dist.log_prob(actions)
    logratio = agent.distribution(obs).log_prob(actions) - old_logprob
    g = trpo.flat_grad(trpo.surrogate_gain(logratio, advantages), params)  # (P,)
    # F on the run's subsample of the states, drawn as trpo.update draws it.
    keep = torch.randperm(batch_size)[:math.ceil(settings["fvp_subsample"] * batch_size)]
    with torch.no_grad():
        fvp_old = agent.distribution(obs[keep])
    kl_grad = trpo.flat_grad(trpo.mean_kl(fvp_old, agent.distribution(obs[keep])), params,
                             create_graph=True)

    def fvp(v):
        return trpo.fisher_vector_product(kl_grad, params, v, settings["cg_damping"])

    reference, _ = trpo.conjugate_gradient(fvp, g, args.reference_iters, REFERENCE_TOL)

    def predicted_gain(s):
        return math.sqrt(2.0 * settings["max_kl"] / (s @ fvp(s)).item()) * (g @ s).item()

    best = predicted_gain(reference)
    print(f"{settings['env']}, step {checkpoint['global_step']:,}: {g.numel()} policy parameters, batch "
          f"{batch_size}, damping {settings['cg_damping']}, entropy {old_dist.entropy().mean().item():.2f}; "
          f"reference s* from {args.reference_iters} iterations, relative residual "
          f"{((fvp(reference) - g).norm() / g.norm()).item():.1e}")
    rows, steps = [], []
    for iters in args.iters:
        s, _ = trpo.conjugate_gradient(fvp, g, iters, trpo.CG_RESIDUAL_TOL)
        residual = ((fvp(s) - g).norm() / g.norm()).item()
        cosine = ((s @ reference) / (s.norm() * reference.norm())).item()
        rows.append((iters, residual, cosine, predicted_gain(s)))
        steps.append(math.sqrt(2.0 * settings["max_kl"] / (s @ fvp(s)).item()) * s)  # trpo.update's

    # The step trpo.update takes: CG's s at the run's --cg-iters, scaled by sqrt(2 delta / s^T (F + lambda I) s).
    s, _ = trpo.conjugate_gradient(fvp, g, settings["cg_iters"], trpo.CG_RESIDUAL_TOL)
    damped = (s @ fvp(s)).item()
    ratio = (damped - settings["cg_damping"] * (s @ s).item()) / damped  # s^T F s / s^T (F + lambda I) s
    theta_old = trpo.flat_params(params)
    trpo.set_flat_params(params, theta_old + math.sqrt(2.0 * settings["max_kl"] / damped) * s)
    with torch.no_grad():
        measured = trpo.mean_kl(old_dist, agent.distribution(obs)).item()
    trpo.set_flat_params(params, theta_old)  # kl_grad's graph holds the old parameters: no fvp after

    def measure():  # as trpo.update's: (surrogate gain, mean KL) on the whole batch
        with torch.no_grad():
            dist = agent.distribution(obs)
        gain = trpo.surrogate_gain(dist.log_prob(actions) - old_logprob, advantages)
        return gain.item(), trpo.mean_kl(old_dist, dist).item()

    print(f"{'CG iters':>8}  {'rel. residual':>13}  {'cos(s, s*)':>10}  {'predicted gain':>14}  {'of s*':>6}"
          f"  {'measured gain':>13}  {'backtracks':>10}")
    for (iters, residual, cosine, gain), step in zip(rows, steps):
        _, backtracks, measured_gain, _ = trpo.backtracking_line_search(
            params, step, measure, settings["max_kl"], settings["backtrack_coef"],
            settings["backtrack_iters"])
        trpo.set_flat_params(params, theta_old)
        print(f"{iters:>8}  {residual:>13.3f}  {cosine:>10.3f}  {gain:>14.4f}  {gain / best:>6.0%}"
              f"  {measured_gain:>13.4f}  {backtracks:>10}")
    print(f"full step at {settings['cg_iters']} CG iterations: s^T F s / s^T (F + lambda I) s = {ratio:.2f}; "
          f"KL of the quadratic model {settings['max_kl'] * ratio:.4f}, measured {measured:.4f} "
          f"(delta {settings['max_kl']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
