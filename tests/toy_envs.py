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


class PixelSide(gym.Env):
    """A dark image with one bright 4x4 square, on its left or its right half: the right
    action is the side the square is on (0 left, 1 right), rewarded 1; 8 steps an episode.
    Learnable only by looking at the pixels. Channels last (36, 36, 3) or first (1, 36, 36),
    36 the smallest side the CNN takes (MIN_IMAGE_SIZE)."""

    SIZE, SQUARE, LENGTH = 36, 4, 8

    def __init__(self, channels_last=True):
        self.channels_last = channels_last
        shape = (self.SIZE, self.SIZE, 3) if channels_last else (1, self.SIZE, self.SIZE)
        self.observation_space = spaces.Box(0, 255, shape, np.uint8)
        self.action_space = spaces.Discrete(2)

    def _obs(self):
        self.side = int(self.np_random.integers(2))
        row = self.np_random.integers(0, self.SIZE - self.SQUARE)
        col = self.np_random.integers(0, self.SIZE // 2 - self.SQUARE) + self.side * self.SIZE // 2
        image = np.zeros((self.SIZE, self.SIZE), np.uint8)
        image[row:row + self.SQUARE, col:col + self.SQUARE] = 255
        return np.repeat(image[:, :, None], 3, axis=2) if self.channels_last else image[None]

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        reward = float(action == self.side)
        self.t += 1
        return self._obs(), reward, self.t >= self.LENGTH, False, {}


class LivesGame(gym.Env):
    """An image game with ALE's lives() (the life-loss wrapper reads it): 3 lives, one lost
    every 4 steps, so a game lasts 12 steps; every step scores 10."""

    observation_space = spaces.Box(0, 255, (1, 36, 36), np.uint8)
    action_space = spaces.Discrete(2)
    LIVES, STEPS_PER_LIFE, REWARD = 3, 4, 10.0

    def __init__(self):
        self.ale = self  # what LifeLossEndsEpisode calls: env.unwrapped.ale.lives()

    def lives(self):
        return self.LIVES - self.t // self.STEPS_PER_LIFE

    def _obs(self):
        return np.full((1, 36, 36), self.t, np.uint8)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        return self._obs(), self.REWARD, self.lives() == 0, False, {}


def lives_game():
    from ppo_clip import LifeLossEndsEpisode  # the same class in every script (a shared section)
    return LifeLossEndsEpisode(LivesGame())


gym.register("PixelSide-v0", entry_point=PixelSide, kwargs={"channels_last": True})
gym.register("PixelSideChannelsFirst-v0", entry_point=PixelSide, kwargs={"channels_last": False})
gym.register("PixelSideTimeLimit-v0", entry_point=PixelSide, max_episode_steps=5)
gym.register("LivesGame-v0", entry_point=lives_game)
