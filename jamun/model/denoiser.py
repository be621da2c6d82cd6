"""The preconditioned denoiser xhat(y) and its score, the model JAMUN samples with."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from jamun.data.graph import GraphBatch, center_positions, check_positions, graph_edges, graph_mean
from jamun.model.convolution import GroupedEdges
from jamun.model.network import EquivariantNetwork
from jamun.model.precondition import Preconditioning
from jamun.schema import section_settings


def model_config(config: Mapping) -> dict:
    """The complete model configuration: ``sigma_nm`` plus every ``train.model`` key.

    Accepts either a flat dict (``sigma_nm`` and model keys, as stored in checkpoints) or the
    whole ``train:`` config section (``sigma_nm`` and a nested ``model:`` dict; its other keys are
    training settings and ignored here). Both are checked against the schema's ``train`` section,
    and missing model keys take its defaults.
    """
    if "sigma_nm" not in config:
        raise ValueError(f"model config needs 'sigma_nm' (noise level in nm); got keys {sorted(config)}")
    model_keys = config["model"] if isinstance(config.get("model"), Mapping) else {
        k: v for k, v in config.items() if k != "sigma_nm"
    }
    train = section_settings("train", {"sigma_nm": config["sigma_nm"], "model": model_keys}, "model config")
    return {"sigma_nm": float(train["sigma_nm"]), **train["model"], "r_cut_nm": float(train["model"]["r_cut_nm"])}


class Denoiser(torch.nn.Module):
    """JAMUN's denoiser D(y) = xhat(y) with Karras preconditioning (docs/design.md §5).

    Parameters
    ----------
    config
        ``sigma_nm`` and the ``train.model`` keys (see :func:`model_config`).
    C
        Data scale in nm^2 (stats.json): mean squared distance over the pair set.

    Notes
    -----
    Edges are found on the raw (unscaled) noisy coordinates y in nm with cutoff ``r_cut_nm``;
    the network sees c_in * y, and its radial features span [0, c_in * r_cut_nm] accordingly.
    """

    def __init__(self, config: Mapping, C: float) -> None:
        super().__init__()
        self.config = model_config(config)
        self.preconditioning = Preconditioning(sigma=self.config["sigma_nm"], C=float(C))
        self.network = EquivariantNetwork(
            hidden_irreps=self.config["hidden_irreps"],
            num_layers=self.config["num_layers"],
            num_radial=self.config["num_radial"],
            radial_hidden=self.config["radial_hidden"],
            r_max=self.preconditioning.c_in * self.config["r_cut_nm"],
            endpoint_features=self.config["endpoint_features"],
            tensor_product=self.config["tensor_product"],
            output=self.config["output"],
        )

    @property
    def sigma(self) -> float:
        """Noise level in nm."""
        return self.preconditioning.sigma

    @property
    def C(self) -> float:
        """Data scale in nm^2."""
        return self.preconditioning.C

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _check(self, y: torch.Tensor, graph: GraphBatch) -> None:
        check_positions(y, graph)
        dtype = next(self.parameters()).dtype
        if y.dtype != dtype:
            raise ValueError(f"positions have dtype {y.dtype} but the model is {dtype}; convert with y.to({dtype})")

    def network_output(self, y: torch.Tensor, graph: GraphBatch) -> torch.Tensor:
        """F(c_in * y, c_noise): (N, 3) raw network output for noisy positions y (N, 3) nm.

        With ``output: energy`` the network gives a scalar Phi(u) = sum of its per-atom outputs
        and F(u) = -grad_u Phi(u) at u = c_in * y. Then c_out * F = -(c_out / c_in) grad_y Phi(c_in y)
        and the score (xhat - y) / sigma^2 is -grad_y of
        E(y) = (1 - c_skip) |y|^2 / (2 sigma^2) + c_out / (c_in sigma^2) Phi(c_in y):
        a gradient field, whatever the weights, so the walk's stationary density is exp(-E)
        (the energy parameterisation of score models; Salimans & Ho 2021, "Should EBMs model the
        energy or the score?"). It costs a backward pass through the network, and training
        differentiates through that gradient.
        """
        self._check(y, graph)
        edge_index, is_bond = graph_edges(y, graph, self.config["r_cut_nm"], self.config["max_num_neighbors"])
        edges = GroupedEdges.from_edges(edge_index, is_bond, graph.num_atoms)
        c_noise = torch.tensor(self.preconditioning.c_noise, dtype=y.dtype, device=y.device)
        scaled = self.preconditioning.c_in * y
        if self.config["output"] == "vector":
            return self.network(scaled, graph, edges, c_noise)
        differentiable = torch.is_grad_enabled()  # training: the gradient must be differentiable too
        with torch.enable_grad():
            u = scaled if scaled.requires_grad else scaled.detach().requires_grad_(True)
            energy = self.network(u, graph, edges, c_noise).sum()
            (gradient,) = torch.autograd.grad(energy, u, create_graph=differentiable)
        return -gradient

    def xhat(self, y: torch.Tensor, graph: GraphBatch) -> torch.Tensor:
        """Denoised positions xhat(y), (N, 3) nm, for noisy positions y (N, 3) nm.

        Computed on per-graph mean-centred y; F is centred per graph too, so xhat keeps y's
        centroid and the score has zero mean per graph.
        """
        self._check(y, graph)
        centred, centroids = center_positions(y, graph)
        output = self.network_output(centred, graph)
        output = output - graph_mean(output, graph)[graph.batch]
        p = self.preconditioning
        return p.c_skip * centred + p.c_out * output + centroids[graph.batch]

    def score(self, y: torch.Tensor, graph: GraphBatch) -> torch.Tensor:
        """Score (xhat(y) - y) / sigma^2 in 1/nm, (N, 3); Tweedie/Miyasawa, one pass (with the energy
        output one forward and one backward pass), not differentiable."""
        with torch.no_grad():
            return (self.xhat(y, graph) - y) / self.sigma**2

    def loss(self, x: torch.Tensor, y: torch.Tensor, graph: GraphBatch, bond_weight: float = 0.0) -> torch.Tensor:
        """Scalar training loss, in units of c_out^2.

        ``mean_graphs(mean_atoms |xhat - x|^2) + bond_weight * mean_graphs(mean_bonds |(xhat_i - xhat_j)
        - (x_i - x_j)|^2)``. The first term is JAMUN's denoising objective. Its minimiser E[x | y]
        has bonds within ~0.003 nm of their length, but bond errors are a small part of it (the
        torsional error no denoiser can remove dominates); the second term weights the errors of
        bond vectors up. Being quadratic in xhat too, it keeps E[x | y] as the minimiser (so the
        score stays Tweedie's), and unlike a bond-length term it is not blind to mirror images.
        x, y: (N, 3) nm, centred and aligned by the caller.
        """
        check_positions(x, graph)
        xhat = self.xhat(y, graph)
        loss = graph_mean((xhat - x).square().sum(dim=1), graph).mean()
        if bond_weight > 0 and graph.bonds.shape[1] > 0:
            i, j = graph.bonds  # each bond in both directions: the mean is unchanged
            squared_error = ((xhat[i] - xhat[j]) - (x[i] - x[j])).square().sum(dim=1)  # [2 n_bonds]
            bond_graph = graph.batch[i]
            sums = squared_error.new_zeros(graph.num_graphs).index_add_(0, bond_graph, squared_error)
            counts = torch.bincount(bond_graph, minlength=graph.num_graphs)
            has_bonds = counts > 0
            loss = loss + bond_weight * (sums[has_bonds] / counts[has_bonds]).mean()
        return loss / self.preconditioning.c_out**2

    def extra_repr(self) -> str:
        return f"sigma={self.sigma} nm, C={self.C:.4g} nm^2, parameters={self.num_parameters():,}"
