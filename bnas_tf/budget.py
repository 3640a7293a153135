"""Search schedules that fit the budget: warm-up, architecture learning rate, diversity decay.

The papers' search settings assume about 20,000 steps (50 epochs of a
25k/25k CIFAR-10 split). At the budgets a CPU affords (tens to hundreds of
steps), the same settings leave α where it started: Adam moves each α by at
most about its learning rate per step, so 3e-4 over 300 steps moves it by
0.09 at most, and with T = 0.2 an edge's op probabilities stay within
`exp(0.09 / 0.2) ≈ 1.6×` of each other. `SearchBudget` scales three settings
with the run so that the papers' values come back at the papers' budgets:

* **Warm-up** is a fraction of the run's steps (weight steps only), instead
  of a number of epochs, so a one-epoch search can warm up too.
* **Architecture learning rate** (the rule): α must be able to move far
  enough to separate an edge's tempered logits `α/T` by `decision` within the
  `N` architecture steps, so

      lr_α = max(base, decision · T / N),

  with `base` the paper's 3e-4. At a paper budget (N ≈ 15,000, T = 0.2,
  decision = 12) the rule gives 1.6e-4 < 3e-4: the paper's value.
  `decision` defaults to 12: in a grid of short searches (benchmarks/README.md,
  `decision_budget.py`) it decided most edges, where 3 and 6 left them
  near uniform, and its seeds agreed on more edges than chance.
* **Diversity decay**: BNAS's entropy bonus decays with τ = 7.7 epochs over a
  50-epoch search; `diversity_tau` keeps that fraction of the run
  (`τ · min(1, epochs / 50)`), so a short search does not spend all of it
  pinned at uniform α by the bonus.

Example:
    >>> budget = SearchBudget(epochs=2, steps_per_epoch=40)
    >>> budget.warmup_steps, budget.arch_steps
    (20, 60)
    >>> round(budget.arch_learning_rate(temperature=0.2), 4)
    0.04
"""

from __future__ import annotations

import dataclasses

__all__ = ["SearchBudget", "BASE_ARCH_LEARNING_RATE", "DEFAULT_DECISION",
           "DEFAULT_WARMUP_FRACTION", "PAPER_SEARCH_EPOCHS"]

BASE_ARCH_LEARNING_RATE = 3e-4  # METHODS.md §5 (DARTS)
PAPER_SEARCH_EPOCHS = 50
DEFAULT_DECISION = 12.0
DEFAULT_WARMUP_FRACTION = 0.25


@dataclasses.dataclass(frozen=True)
class SearchBudget:
    """The steps a search is given, and the schedule that fits them.

    Args:
        epochs: search epochs.
        steps_per_epoch: steps (architecture + weight step pairs) per epoch.
        warmup_fraction: share of the steps, from the start, with weight steps only.
        decision: separation of the tempered logits `α/T` the architecture
            learning rate must allow within the run (0: keep the base rate).

    Raises:
        ValueError: for a budget without steps or fractions outside [0, 1).
    """

    epochs: int
    steps_per_epoch: int
    warmup_fraction: float = DEFAULT_WARMUP_FRACTION
    decision: float = DEFAULT_DECISION

    def __post_init__(self):
        if self.epochs < 1 or self.steps_per_epoch < 1:
            raise ValueError(f"A search needs at least one epoch of at least one step, got "
                             f"epochs={self.epochs!r}, steps_per_epoch={self.steps_per_epoch!r}.")
        if not 0 <= self.warmup_fraction < 1:
            raise ValueError(f"Expected 0 <= warmup_fraction < 1, got {self.warmup_fraction!r}.")
        if self.decision < 0:
            raise ValueError(f"Expected decision >= 0, got {self.decision!r}.")

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    @property
    def warmup_steps(self) -> int:
        """Steps, from the start, without architecture steps."""
        return min(self.total_steps - 1, round(self.warmup_fraction * self.total_steps))

    @property
    def arch_steps(self) -> int:
        """Architecture steps of the run (at least 1)."""
        return self.total_steps - self.warmup_steps

    def arch_learning_rate(self, temperature: float,
                           base: float = BASE_ARCH_LEARNING_RATE) -> float:
        """`max(base, decision · T / arch_steps)` (module docstring)."""
        if temperature <= 0:
            raise ValueError(f"Expected temperature > 0, got {temperature!r}.")
        return max(base, self.decision * temperature / self.arch_steps)

    def diversity_tau(self, tau: float) -> float:
        """BNAS's τ scaled to the run: `τ · min(1, epochs / 50)` (epochs)."""
        return tau * min(1.0, self.epochs / PAPER_SEARCH_EPOCHS)
