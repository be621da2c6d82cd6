"""The preconditioned denoiser xhat(y) and its score, the model JAMUN samples with."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from jamun.data.graph import GraphBatch, center_positions, check_positions, graph_edges, graph_mean
from jamun.model.convolution import GroupedEdges
from jamun.model.network import EquivariantNetwork
from jamun.model.precondition import Preconditioning, check_sigma_range
from jamun.schema import section_settings


def model_config(config: Mapping) -> dict:
    """The complete model configuration: ``sigma_nm``, ``sigma_range_nm`` and every ``train.model`` key.

    Accepts either a flat dict (``sigma_nm``, ``sigma_range_nm`` and model keys, as stored in
    checkpoints) or the whole ``train:`` config section (``sigma_nm``, ``sigma_range_nm`` and a
    nested ``model:`` dict; its other keys are training settings and ignored here). Both are checked
    against the schema's ``train`` section, and missing keys take its defaults (checkpoints written
    before ``sigma_range_nm`` existed get null: one noise level).
    """
    if "sigma_nm" not in config:
        raise ValueError(f"model config needs 'sigma_nm' (noise level in nm); got keys {sorted(config)}")
    model_keys = config["model"] if isinstance(config.get("model"), Mapping) else {
        k: v for k, v in config.items() if k not in ("sigma_nm", "sigma_range_nm")
    }
    train = section_settings("train", {"sigma_nm": config["sigma_nm"], "model": model_keys,
                                       "sigma_range_nm": config.get("sigma_range_nm")}, "model config")
    sigma_range = check_sigma_range(float(train["sigma_nm"]), train["sigma_range_nm"], "model config")
    return {"sigma_nm": float(train["sigma_nm"]), "sigma_range_nm": None if sigma_range is None else list(sigma_range),
            **train["model"], "r_cut_nm": float(train["model"]["r_cut_nm"])}


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

    With ``sigma_range_nm`` = [low, high] the model is conditioned on sigma (c_noise = log10 sigma)
    and can be evaluated at any sigma of the range: ``xhat(y, graph, sigma)`` with a float or one
    sigma per graph, the scalings then per graph (Karras et al. 2022, Table 1).
    """

    def __init__(self, config: Mapping, C: float) -> None:
        super().__init__()
        self.config = model_config(config)
        self.preconditioning = Preconditioning(sigma=self.config["sigma_nm"], C=float(C))
        r_max = self.preconditioning.c_in * self.config["r_cut_nm"]
        if self.sigma_range is not None:
            # The envelope reaches 0 at r_max in scaled units, i.e. at raw distance r_max / c_in(sigma),
            # and stays 0 beyond (RadialEmbedding clamps). With r_max = c_in(high) * r_cut_nm (the
            # SMALLEST c_in, the largest sigma) that raw distance is r_cut_nm * c_in(high) / c_in(sigma)
            # <= r_cut_nm for every sigma of the range: each edge fades to 0 before the radius graph
            # drops it, so xhat stays continuous in y at every sigma (at sigma = high exactly at the
            # cutoff). The largest c_in (sigma = low) would leave the envelope > 0 at the cutoff for
            # every sigma > low: edges would enter and leave the graph with a jump.
            r_max = Preconditioning(sigma=self.sigma_range[1], C=float(C)).c_in * self.config["r_cut_nm"]
        self.network = EquivariantNetwork(
            hidden_irreps=self.config["hidden_irreps"],
            num_layers=self.config["num_layers"],
            num_radial=self.config["num_radial"],
            radial_hidden=self.config["radial_hidden"],
            r_max=r_max,
            endpoint_features=self.config["endpoint_features"],
            tensor_product=self.config["tensor_product"],
            output=self.config["output"],
        )

    @property
    def sigma(self) -> float:
        """Noise level in nm."""
        return self.preconditioning.sigma

    @property
    def sigma_range(self) -> tuple[float, float] | None:
        """(low, high) nm of the noise levels it was trained on, or None for one level (``sigma``)."""
        sigma_range = self.config["sigma_range_nm"]
        return None if sigma_range is None else (float(sigma_range[0]), float(sigma_range[1]))

    def check_sigma(self, value: float, key: str) -> float:
        """``value`` (nm) if the model was trained at it: in its range, or equal to its ``sigma``
        without one; else a one-line ValueError naming ``key``, the value and the model's levels."""
        if self.sigma_range is None:
            if value != self.sigma:
                raise ValueError(f"{key} = {value} is not the model's noise level sigma_nm = {self.sigma} nm "
                                 f"(trained at one level: train.sigma_range_nm null)")
            return float(value)
        low, high = self.sigma_range
        if not (math.isfinite(value) and low <= value <= high):
            raise ValueError(f"{key} = {value} is outside the model's noise range [{low}, {high}] nm")
        return float(value)

    def scalings(self, sigma: float | torch.Tensor | None, y: torch.Tensor, graph: GraphBatch) -> tuple:
        """(c_in, c_skip, c_out, c_noise) at ``sigma`` for positions y (N, 3): floats and a scalar
        c_noise tensor for a float or None (the model's sigma), else (N, 1) tensors and an (N,)
        c_noise for one sigma per graph, (num_graphs,) nm."""
        if sigma is None or not isinstance(sigma, torch.Tensor):
            p = self.preconditioning if sigma is None else Preconditioning(sigma=float(sigma), C=self.C)
            return p.c_in, p.c_skip, p.c_out, torch.tensor(p.c_noise, dtype=y.dtype, device=y.device)
        if sigma.shape != (graph.num_graphs,):
            raise ValueError(f"sigma must be None, a float or a ({graph.num_graphs},) tensor (one per graph), "
                             f"got shape {tuple(sigma.shape)}")
        # float64 as the float path computes, then rounded to the model's dtype
        atoms = self.preconditioning.at(sigma.to(device=y.device, dtype=torch.float64))
        atoms = [value.to(y.dtype)[graph.batch] for value in atoms]
        return atoms[0][:, None], atoms[1][:, None], atoms[2][:, None], atoms[3]

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

    def network_output(self, y: torch.Tensor, graph: GraphBatch, sigma: float | torch.Tensor | None = None
                       ) -> torch.Tensor:
        """F(c_in * y, c_noise): (N, 3) raw network output for noisy positions y (N, 3) nm at noise
        level ``sigma`` (see :meth:`xhat`).

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
        c_in, _, _, c_noise = self.scalings(sigma, y, graph)
        scaled = c_in * y
        if self.config["output"] == "vector":
            return self.network(scaled, graph, edges, c_noise)
        differentiable = torch.is_grad_enabled()  # training: the gradient must be differentiable too
        with torch.enable_grad():
            u = scaled if scaled.requires_grad else scaled.detach().requires_grad_(True)
            energy = self.network(u, graph, edges, c_noise).sum()
            (gradient,) = torch.autograd.grad(energy, u, create_graph=differentiable)
        return -gradient

    def xhat(self, y: torch.Tensor, graph: GraphBatch, sigma: float | torch.Tensor | None = None) -> torch.Tensor:
        """Denoised positions xhat(y), (N, 3) nm, for noisy positions y (N, 3) nm at noise level ``sigma``.

        ``sigma``: None (the model's ``sigma_nm``), a float in nm, or a (num_graphs,) tensor, one
        level per graph; xhat = c_skip y + c_out F(c_in y, c_noise) with the scalings at each
        graph's sigma (Karras et al. 2022). A model trained at one level (no ``sigma_range_nm``)
        has only seen its ``sigma``, and any model only its range: elsewhere the output is an
        extrapolation (:meth:`check_sigma` says which levels are safe).
        Computed on per-graph mean-centred y; F is centred per graph too, so xhat keeps y's
        centroid and the score has zero mean per graph.
        """
        self._check(y, graph)
        centred, centroids = center_positions(y, graph)
        _, c_skip, c_out, _ = self.scalings(sigma, y, graph)
        output = self.network_output(centred, graph, sigma)
        output = output - graph_mean(output, graph)[graph.batch]
        return c_skip * centred + c_out * output + centroids[graph.batch]

    def score(self, y: torch.Tensor, graph: GraphBatch) -> torch.Tensor:
        """Score (xhat(y) - y) / sigma^2 in 1/nm, (N, 3); Tweedie/Miyasawa, one pass (with the energy
        output one forward and one backward pass), not differentiable."""
        with torch.no_grad():
            return (self.xhat(y, graph) - y) / self.sigma**2

    def loss(self, x: torch.Tensor, y: torch.Tensor, graph: GraphBatch, bond_weight: float = 0.0,
             sigma: float | torch.Tensor | None = None) -> torch.Tensor:
        """Scalar training loss, in units of c_out^2, for y noised at ``sigma`` (as in :meth:`xhat`).

        ``mean_graphs(mean_atoms |xhat - x|^2) + bond_weight * mean_graphs(mean_bonds |(xhat_i - xhat_j)
        - (x_i - x_j)|^2)``. The first term is JAMUN's denoising objective. Its minimiser E[x | y]
        has bonds within ~0.003 nm of their length, but bond errors are a small part of it (the
        torsional error no denoiser can remove dominates); the second term weights the errors of
        bond vectors up. Being quadratic in xhat too, it keeps E[x | y] as the minimiser (so the
        score stays Tweedie's), and unlike a bond-length term it is not blind to mirror images.
        x, y: (N, 3) nm, centred and aligned by the caller.

        With one sigma per graph (a tensor) each graph's errors are divided by c_out(sigma_g)^2
        before the means over graphs: Karras et al. (2022)'s loss weight lambda(sigma) = 1/c_out^2,
        which makes the network's target F unit-variance at every sigma. At one sigma (None or a
        float) this is the same loss, computed as before (one division at the end).
        """
        check_positions(x, graph)
        xhat = self.xhat(y, graph, sigma)
        per_graph = isinstance(sigma, torch.Tensor)
        # weight of each graph's error: 1 at one level (divided at the end), 1/c_out(sigma_g)^2 per graph
        weight = self.preconditioning.at(sigma.to(x.device, torch.float64)).c_out.square().reciprocal().to(x.dtype) \
            if per_graph else None
        errors = graph_mean((xhat - x).square().sum(dim=1), graph)
        loss = (errors * weight if per_graph else errors).mean()
        if bond_weight > 0 and graph.bonds.shape[1] > 0:
            i, j = graph.bonds  # each bond in both directions: the mean is unchanged
            squared_error = ((xhat[i] - xhat[j]) - (x[i] - x[j])).square().sum(dim=1)  # [2 n_bonds]
            bond_graph = graph.batch[i]
            sums = squared_error.new_zeros(graph.num_graphs).index_add_(0, bond_graph, squared_error)
            counts = torch.bincount(bond_graph, minlength=graph.num_graphs)
            has_bonds = counts > 0
            bond_errors = sums[has_bonds] / counts[has_bonds]
            loss = loss + bond_weight * (bond_errors * weight[has_bonds] if per_graph else bond_errors).mean()
        if per_graph:
            return loss
        c_out = self.preconditioning.c_out if sigma is None else Preconditioning(sigma=float(sigma), C=self.C).c_out
        return loss / c_out**2

    def extra_repr(self) -> str:
        levels = f", sigma_range={list(self.sigma_range)} nm" if self.sigma_range else ""
        return f"sigma={self.sigma} nm{levels}, C={self.C:.4g} nm^2, parameters={self.num_parameters():,}"
