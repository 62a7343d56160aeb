"""Learning-rate schedules as small resumable state machines (state is plain JSON)."""

from __future__ import annotations

import math
from typing import Any

from subpixel.training.config import TrainConfig


class Schedule:
    """Gives the factor applied to every parameter group's base rate at each iteration.

    ``observe(loss)`` feeds training losses to the ``plateau`` rule (ESPCN's "lower the rate
    when the improvement falls below mu"); ``observe_sum`` feeds several at once. With
    ``warmup`` the factor rises linearly over the first ``warmup`` iterations, and the cosine
    anneals over the iterations after them.
    """

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.plateau_scale = 1.0
        self.window_sum = 0.0
        self.window_count = 0
        self.previous_window: float | None = None

    def factor(self, iteration: int) -> float:
        c = self.config
        warm = min(1.0, (iteration + 1) / c.warmup) if c.warmup else 1.0
        return warm * self._after_warmup(iteration)

    def _after_warmup(self, iteration: int) -> float:
        c = self.config
        if c.schedule == "step":
            return c.step_gamma ** (iteration // c.step_size)
        if c.schedule == "cosine":
            floor = c.min_lr / c.lr
            progress = min(max(iteration - c.warmup, 0) / (c.iterations - c.warmup), 1.0)
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
        if c.schedule == "plateau":
            return self.plateau_scale
        return 1.0

    def observe(self, loss: float) -> None:
        self.observe_sum(loss, 1)

    def observe_sum(self, total: float, count: int) -> None:
        """Feed ``count`` losses summing to ``total``; they must not cross the end of a
        ``plateau_every`` window (the loop feeds each window's losses up to its end)."""
        if self.config.schedule != "plateau":
            return
        if self.window_count + count > self.config.plateau_every:
            raise ValueError("losses fed across the end of a plateau window")
        self.window_sum += total
        self.window_count += count
        if self.window_count < self.config.plateau_every:
            return
        mean = self.window_sum / self.window_count
        previous = self.previous_window
        if previous is not None and (previous - mean) / previous < self.config.plateau_mu:
            floor = self.config.min_lr / self.config.lr
            self.plateau_scale = max(self.plateau_scale * self.config.plateau_factor, floor)
        self.previous_window, self.window_sum, self.window_count = mean, 0.0, 0

    def state_dict(self) -> dict[str, Any]:
        return {
            "plateau_scale": self.plateau_scale,
            "window_sum": self.window_sum,
            "window_count": self.window_count,
            "previous_window": self.previous_window,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.plateau_scale = state["plateau_scale"]
        self.window_sum = state["window_sum"]
        self.window_count = state["window_count"]
        self.previous_window = state["previous_window"]
