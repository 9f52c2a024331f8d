"""From the trained weights to the returned network: averaging over the updates, and interpolation
towards the pre-trained weights by a fixed weight or the one Stein's unbiased risk estimate prefers."""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
from torch import nn

from rfr_deploy.adaptation.sure import Selection, SureScorer, SureTerms, choose_interpolation


class WeightAverage:
    """A running average of a network's weights over the updates (see ``AdaptConfig.ema``)."""

    def __init__(self, model: nn.Module, ema: float):
        self.model = copy.deepcopy(model).eval()
        self.ema, self.count = ema, 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.count += 1
        weight = max(1.0 - self.ema, 1.0 / self.count)
        for avg, p in zip(self.model.parameters(), model.parameters(), strict=True):
            avg.lerp_(p.detach(), weight)


class WeightBlend:
    """Result = pre-trained + α × (trained − pre-trained).

    With a ``scorer`` (SURE, GCV or coloured SURE: :func:`rfr_deploy.adaptation.scoring.make_scorer`) α is
    chosen among its :meth:`~rfr_deploy.adaptation.sure.SureScorer.candidates`; without one, α is the fixed
    ``interpolation``.
    """

    def __init__(self, model: nn.Module, scorer: SureScorer | None, interpolation: float):
        self.origin = [p.detach().clone() for p in model.parameters()]
        self.interpolation = interpolation
        self.scorer = scorer
        """The probes and criterion of the selection (None: fixed ``interpolation``); checkpoints
        scored with it can hand their terms to :meth:`result`."""
        self.selection = Selection(interpolation, {})
        """The last selection (its α, the estimate of every candidate, the chosen one's estimated gain);
        with no scorer, the fixed ``interpolation``."""
        self._selected_at: int | None = None

    @property
    def chosen(self) -> float:
        return self.selection.interpolation

    @property
    def estimates(self) -> dict[float, float]:
        return self.selection.estimates

    def keep(self, selection: Selection, step: int) -> None:
        """Make ``selection``, made earlier for the weights after ``step`` updates, the current one again."""
        self.selection, self._selected_at = selection, step

    def result(
        self, current: nn.Module, step: int, known: Mapping[float, SureTerms] | None = None
    ) -> nn.Module:
        """The network to return for the weights ``current`` hold after ``step`` updates (a copy unless α is 1).

        The SURE selection (1 + :func:`~rfr_deploy.adaptation.sure.probe_count` forward passes per candidate) runs
        once per step: a callback that reads the network after some update and the final result, when
        it keeps that update's weights, share it. ``known``: terms :attr:`scorer` already has for some
        α of these weights (α = 0 and the kept checkpoint), not scored again.
        """
        if self.scorer is None:
            return current if self.chosen == 1.0 else interpolated(current, self.origin, self.chosen)
        if step != self._selected_at:
            self.selection = choose_interpolation(
                lambda alpha: interpolated(current, self.origin, alpha),
                self.scorer,
                self.scorer.candidates(self.interpolation),
                known,
            )
            self._selected_at = step
        return interpolated(current, self.origin, self.chosen)


@torch.no_grad()
def interpolated(model: nn.Module, origin: list[torch.Tensor], alpha: float) -> nn.Module:
    """A copy of ``model`` whose weights are origin + alpha × (weights − origin)."""
    out = copy.deepcopy(model)
    for p, p0 in zip(out.parameters(), origin, strict=True):
        p.copy_(torch.lerp(p0.to(p.dtype), p, alpha))
    return out
