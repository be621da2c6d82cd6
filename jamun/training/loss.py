"""The training objective as a module whose forward returns the loss, so that
``DistributedDataParallel`` can wrap it (docs/design.md §5.4, §8)."""

from __future__ import annotations

import torch

from jamun.data.graph import GraphBatch
from jamun.model import Denoiser
from jamun.training.noise import corrupt

__all__ = ["DenoisingLoss"]


class DenoisingLoss(torch.nn.Module):
    """Noise one rank's clean frames and score the denoiser on them: the §5.4 loss in one forward.

    DDP hooks into ``forward`` and ``backward`` of the module it wraps; the denoiser's own entry
    points (``xhat``, ``loss``) bypass both, so the whole objective is the wrapped module. The
    value is a mean over this rank's graphs. During training every rank holds the same number of
    graphs (``train.batch_size``: :meth:`jamun.data.dataset.EpochOrder.batch` cuts a global batch
    of ``W * batch_size`` frames into W equal slices), so DDP's average of the ranks' gradients is
    the gradient of the mean over the global batch.

    Parameters
    ----------
    denoiser
        The model trained (its ``sigma`` is the noise level of the pairs unless ``forward`` is given
        one per graph).
    bond_weight
        ``train.bond_loss_weight``; 0 for the plain denoising loss (validation).
    """

    def __init__(self, denoiser: Denoiser, bond_weight: float = 0.0) -> None:
        super().__init__()
        self.denoiser, self.bond_weight = denoiser, bond_weight

    def forward(self, x: torch.Tensor, eta: torch.Tensor, graph: GraphBatch, sigma: torch.Tensor | None = None
                ) -> torch.Tensor:
        """Scalar loss in units of c_out^2 for clean frames x (N, 3) nm and standard noise eta (N, 3),
        at the model's sigma, or at one sigma per graph (num_graphs,) nm (``train.sigma_range_nm``;
        each graph's error then weighted by 1/c_out(sigma_g)^2, :meth:`Denoiser.loss`)."""
        x, y = corrupt(x, eta, self.denoiser.sigma if sigma is None else sigma, graph)
        return self.denoiser.loss(x, y, graph, bond_weight=self.bond_weight, sigma=sigma)
