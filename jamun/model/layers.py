"""One SE(3)-equivariant message-passing layer of the denoiser network."""

from __future__ import annotations

import torch
from e3nn import nn as e3nn_nn
from e3nn import o3


def channel_index(irreps: o3.Irreps) -> torch.Tensor:
    """(irreps.dim,) LongTensor: the channel (irrep copy) each feature component belongs to."""
    return torch.repeat_interleave(
        torch.arange(irreps.num_irreps), torch.tensor([ir.dim for mul, ir in irreps for _ in range(mul)])
    )


class InteractionBlock(torch.nn.Module):
    """Tensor-product convolution, gate, noise-conditional scaling and gated skip.

    ``h_i <- skip(h_i) + g * s(c_noise) * Gate(sum_j w_ij TP(h_j, Y(r_ij); W(e_ij)) / sum_j w_ij)``

    where Y are spherical harmonics of the edge direction (l <= 1, with l = 1 taken as a
    pseudovector 1e so that parity is not a symmetry), W(e_ij) per-edge tensor-product weights from
    an MLP of the edge features (radial basis + edge type), w_ij the cutoff envelope (1 for bonds)
    making the mean over neighbours smooth in the coordinates, s a per-channel scale from the noise
    embedding and g a learned per-channel gate of the residual update (both scalars per irrep copy,
    so equivariance is kept).

    Parameters
    ----------
    irreps_in
        Irreps of the input features.
    irreps_hidden
        Irreps of the output features, only 0e and 1e (e.g. ``120x0e + 32x1e``).
    irreps_sh
        Irreps of the edge spherical harmonics (``1x0e + 1x1e``).
    num_edge_features
        Width of the per-edge invariant features feeding the weight MLP.
    radial_hidden
        Hidden width of the two-layer weight MLP.
    num_noise_features
        Width of the noise embedding.
    """

    def __init__(
        self,
        irreps_in: o3.Irreps,
        irreps_hidden: o3.Irreps,
        irreps_sh: o3.Irreps,
        num_edge_features: int,
        radial_hidden: int,
        num_noise_features: int,
    ) -> None:
        super().__init__()
        self.irreps_in = o3.Irreps(irreps_in)
        self.irreps_out = o3.Irreps(irreps_hidden)
        scalars = o3.Irreps([(mul, ir) for mul, ir in self.irreps_out if ir.l == 0])
        vectors = o3.Irreps([(mul, ir) for mul, ir in self.irreps_out if ir.l > 0])
        gates = o3.Irreps(f"{vectors.num_irreps}x0e")

        self.tp = o3.FullyConnectedTensorProduct(
            self.irreps_in, irreps_sh, scalars + gates + vectors, shared_weights=False, internal_weights=False
        )
        self.weight_mlp = e3nn_nn.FullyConnectedNet(
            [num_edge_features, radial_hidden, radial_hidden, self.tp.weight_numel], torch.nn.functional.silu
        )
        self.gate = e3nn_nn.Gate(scalars, [torch.nn.functional.silu], gates, [torch.sigmoid], vectors)
        self.noise_scale = torch.nn.Linear(num_noise_features, self.irreps_out.num_irreps)
        torch.nn.init.zeros_(self.noise_scale.weight)  # scale 1 at initialisation, whatever sigma
        torch.nn.init.ones_(self.noise_scale.bias)
        self.skip = o3.Linear(self.irreps_in, self.irreps_out)
        self.skip_gate = torch.nn.Parameter(torch.zeros(self.irreps_out.num_irreps))
        self.register_buffer("channel", channel_index(self.irreps_out), persistent=False)

    def forward(
        self,
        h: torch.Tensor,
        sh: torch.Tensor,
        edge_features: torch.Tensor,
        edge_weight: torch.Tensor,
        inverse_weight_sum: torch.Tensor,
        edge_index: torch.Tensor,
        noise_features: torch.Tensor,
    ) -> torch.Tensor:
        """Update node features.

        Parameters
        ----------
        h
            (N, irreps_in.dim) node features.
        sh
            (E, irreps_sh.dim) spherical harmonics of the edge vectors r_j - r_i.
        edge_features
            (E, num_edge_features) invariant edge features.
        edge_weight
            (E,) envelope weight of each edge in [0, 1].
        inverse_weight_sum
            (N,) 1 / max(sum of incoming edge weights, 1).
        edge_index
            (2, E) source j, target i.
        noise_features
            (num_noise_features,) or (N, num_noise_features) noise embedding.

        Returns
        -------
        (N, irreps_out.dim) node features.
        """
        source, target = edge_index
        messages = self.tp(h[source], sh, self.weight_mlp(edge_features)) * edge_weight[:, None]  # [E, tp_out]
        aggregated = h.new_zeros(h.shape[0], messages.shape[1]).index_add_(0, target, messages)
        update = self.gate(aggregated * inverse_weight_sum[:, None])  # [N, irreps_out.dim]
        scale = self.noise_scale(noise_features) * torch.sigmoid(self.skip_gate)  # [..., channels]
        return self.skip(h) + update * scale[..., self.channel]

    def extra_repr(self) -> str:
        return f"{self.irreps_in} -> {self.irreps_out}, tp weights per edge={self.tp.weight_numel}"
