"""Tiny environments for tests, registered on import.

Scripts reach them as `--env tests.toy_envs:<Name>-v0` (Gymnasium imports the
module named before the colon), so the tests can exercise spaces and failure
modes that no built-in environment has.
"""

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class Corridor(gym.Env):
    """Reward 1 per step; after `length` steps the episode either terminates
    (a real end) or is cut by the time limit (truncation), per `terminate`."""

    def __init__(self, length=5, terminate=True):
        self.length, self.terminate = length, terminate
        self.observation_space = spaces.Box(-np.inf, np.inf, (2,), np.float32)
        self.action_space = spaces.Discrete(2)
        self.t = 0

    def _obs(self):
        return np.array([self.t, 1.0], dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        terminated = self.terminate and self.t >= self.length
        return self._obs(), 1.0, terminated, False, {}


class NanReward(gym.Env):
    """Rewards 1 until its 200th step in all, NaN after: training must stop
    cleanly and keep the checkpoint written before the NaN arrived."""

    observation_space = spaces.Box(-1.0, 1.0, (3,), np.float32)
    action_space = spaces.Discrete(2)
    GOOD_STEPS = 200

    def __init__(self):
        self.total_steps = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(3, np.float32), {}

    def step(self, action):
        self.total_steps += 1
        reward = 1.0 if self.total_steps <= self.GOOD_STEPS else float("nan")
        return np.zeros(3, np.float32), reward, False, self.total_steps % 10 == 0, {}


class NoDisplay(Corridor):
    """Renders like a machine without a display: --capture-video must say so in one line."""

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, render_mode=None):
        super().__init__()
        self.render_mode = render_mode

    def render(self):
        raise RuntimeError("no display here")


class _Unsupported(gym.Env):
    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 0.0, True, False, {}


def _unsupported(obs_space, action_space):
    return type("Unsupported", (_Unsupported,), {"observation_space": obs_space, "action_space": action_space})


FLAT = spaces.Box(-1.0, 1.0, (3,), np.float32)
gym.register("CorridorTerminates-v0", entry_point=Corridor, kwargs={"terminate": True})
gym.register("CorridorTimeLimit-v0", entry_point=Corridor, kwargs={"terminate": False}, max_episode_steps=5)
gym.register("NanReward-v0", entry_point=NanReward)
gym.register("NoDisplay-v0", entry_point=NoDisplay, max_episode_steps=5)
gym.register("DictObs-v0", entry_point=_unsupported(spaces.Dict({"x": FLAT}), spaces.Discrete(2)))
gym.register("ImageObs-v0", entry_point=_unsupported(spaces.Box(0, 255, (8, 8, 3), np.uint8), spaces.Discrete(2)))
gym.register("MultiDiscreteAct-v0", entry_point=_unsupported(FLAT, spaces.MultiDiscrete([2, 3])))
