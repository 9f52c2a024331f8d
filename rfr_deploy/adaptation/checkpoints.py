"""The best network seen along an adaptation, by Stein's unbiased risk estimate on the noisy input.

Restore-from-restored gains grow for a while and then fall as the network learns its own pseudo-clean
target too well (benchmarks/results/budget_*): a long budget without a rule that keeps the best
checkpoint gives the gain back. Every ``checkpoint_every`` updates the current network is scored by
SURE with one fixed set of probes (so differences between checkpoints are precise) and the best
weights are kept; the pre-trained network is the reference, so a run whose every checkpoint scores
worse keeps the pre-trained weights. Checkpoints are compared at full step (α = 1); the run then weighs
the kept one at its best interpolation against the last weights at theirs
(``rfr_deploy.adaptation.loop._Run``): a last network that loses at α = 1 can still gain at α = 0.25.
"""

from __future__ import annotations

import torch
from torch import nn

from rfr_deploy.adaptation.sure import SureScorer, SureTerms


class CheckpointKeeper:
    """Keeps the weights of the best-scoring network offered to it (see the module docstring)."""

    def __init__(self, model: nn.Module, scorer: SureScorer):
        self.scorer = scorer
        self.reference = scorer.terms(model)
        self.best_gain = 0.0
        self.best_step = 0
        self.best: list[torch.Tensor] | None = None
        self.best_terms = self.last_terms = self.reference
        self.scores: dict[int, float] = {0: scorer.decibels(self.reference)}
        """SURE estimate (dB) of every checkpoint, by update; 0 is the pre-trained network."""

    @torch.no_grad()
    def offer(self, model: nn.Module, step: int) -> None:
        """Score ``model`` after ``step`` updates; keep a copy of its weights if it is the best so far."""
        terms = self.scorer.terms(model)
        self.scores[step] = self.scorer.decibels(terms)
        self.last_terms = terms
        gain = self.scorer.worst_gain(self.reference, terms)
        if gain > self.best_gain:
            self.best_gain, self.best_step, self.best_terms = gain, step, terms
            self.best = [p.detach().clone() for p in model.parameters()]

    @torch.no_grad()
    def restore(self, model: nn.Module, origin: list[torch.Tensor]) -> None:
        """Load the best weights into ``model`` (the pre-trained ``origin`` when nothing beat it)."""
        weights = self.best if self.best is not None else origin
        for p, w in zip(model.parameters(), weights, strict=True):
            p.copy_(w)

    def known_terms(self, last: bool = False) -> dict[float, SureTerms]:
        """The SURE terms of the interpolation's ends: α = 0 (pre-trained) and α = 1 (the kept weights
        after :meth:`restore`, or with ``last`` the weights offered last), so the selection does not
        score them again."""
        return {0.0: self.reference, 1.0: self.last_terms if last else self.best_terms}
