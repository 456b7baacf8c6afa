"""How far the normalizer warm-up moves pi_old from the policy that acted.

A fresh run's first rollout is played by a policy whose normalizer is still the
identity; the warm-up then seeds the statistics from that rollout and scores it
again, so the first update's pi_old sees normalized inputs. This measures the
gap the warm-up opens on that first batch, per environment, over seeds:

    python benchmarks/warm_up.py --envs CartPole-v1 Hopper-v5 --seeds 1 2 3

mean KL(acting || pi_old) over the batch, and mean |pi_old(a|s) / pi_acting(a|s) - 1|
over the actions taken (the importance weight the first update leaves out).
"""

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: find ppo_clip.py
import ppo_clip  # noqa: E402  (the agent and rollout are shared by all three scripts)


def first_batch_gap(env_id, seed, num_steps):
    """(mean KL(acting || seeded), mean |ratio - 1|) on the first rollout of a fresh run."""
    spaces = ppo_clip.check_env(env_id)
    envs = ppo_clip.make_vector_env(env_id, 1)
    try:
        obs = ppo_clip.seed_everything(seed, envs)
        agent = ppo_clip.Agent(**spaces)
        buf, _ = ppo_clip.collect_rollout(envs, agent, obs, num_steps, 0.99, ppo_clip.EpisodeTracker(1, 0, 1))
    finally:
        envs.close()
    with torch.no_grad():
        states, actions = buf.obs.flatten(0, 1), buf.actions.flatten(0, 1)
        acting = agent.distribution(states)
        agent.obs_rms.update(states)  # what the warm-up does before scoring
        seeded = agent.distribution(states)
        kl = torch.distributions.kl_divergence(acting, seeded).mean().item()
        ratio = (seeded.log_prob(actions) - acting.log_prob(actions)).exp()
    return kl, (ratio - 1).abs().mean().item()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=["CartPole-v1", "Pendulum-v1", "Hopper-v5"],
                        help="(default: %(default)s)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3], help="(default: %(default)s)")
    parser.add_argument("--num-steps", type=int, default=2048,
                        help="steps in the first rollout (default: %(default)s, the scripts' batch)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    for env_id in args.envs:
        try:
            gaps = [first_batch_gap(env_id, seed, args.num_steps) for seed in args.seeds]
        except ppo_clip.UsageError as error:
            print(f"{Path(sys.argv[0]).name}: error: {error}", file=sys.stderr)
            return 2
        kl, ratio = (statistics.mean(values) for values in zip(*gaps))
        print(f"{env_id}: KL(acting || pi_old) {kl:.1e}, |ratio - 1| {ratio:.1e} "
              f"(mean over seeds {' '.join(map(str, args.seeds))})")


if __name__ == "__main__":
    sys.exit(main())
