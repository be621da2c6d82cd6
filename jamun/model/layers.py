"""One SE(3)-equivariant message-passing layer of the denoiser network."""

from __future__ import annotations

import torch
from e3nn import nn as e3nn_nn
from e3nn import o3

from jamun.model.convolution import ChannelwiseConvolution, GroupedEdges, TensorProductConvolution

CONVOLUTIONS = {"uvw": TensorProductConvolution, "uvu": ChannelwiseConvolution}


def multiplicities(irreps: o3.Irreps) -> tuple[int, int]:
    """(number of 0e, number of 1e) in irreps made of those two only."""
    return irreps.count("0e"), irreps.count("1e")


def channel_index(irreps: o3.Irreps) -> torch.Tensor:
    """(irreps.dim,) LongTensor: the channel (irrep copy) each feature component belongs to."""
    return torch.repeat_interleave(
        torch.arange(irreps.num_irreps), torch.tensor([ir.dim for mul, ir in irreps for _ in range(mul)])
    )


class InteractionBlock(torch.nn.Module):
    """Tensor-product convolution, gate, noise-conditional scaling and gated skip.

    ``h_i <- skip(h_i) + g * s(c_noise) * Gate(L(sum_j w_ij m_ij / max(sum_j w_ij, 1)))``

    with m_ij the convolution's messages and L its linear ``mix`` (the identity for the fully
    connected product, the channel mixing of the channel-wise one), w_ij the cutoff envelope (1 for
    bonds), which makes the mean over neighbours smooth in the coordinates, s a per-channel scale
    from the noise embedding and g a learned per-channel gate of the residual update. s and g are
    scalars per irrep copy, so equivariance is kept.

    Parameters
    ----------
    irreps_in
        Input features ``ax0e + bx1e`` (b may be 0).
    irreps_hidden
        Output features ``sx0e + vx1e``.
    num_edge_features
        Width of the invariant edge features.
    radial_hidden
        Hidden width of the edge-weight MLP.
    num_noise_features
        Width of the noise embedding.
    endpoint_features
        Width of the learned projection of each endpoint's scalar features appended to the edge
        features (0: off). With it the edge weights depend on the types of both atoms of a pair
        (e.g. the ideal C-N versus C-C bond length), not only on the source atom's features.
    """

    def __init__(
        self,
        irreps_in: o3.Irreps,
        irreps_hidden: o3.Irreps,
        num_edge_features: int,
        radial_hidden: int,
        num_noise_features: int,
        endpoint_features: int = 0,
        tensor_product: str = "uvw",
    ) -> None:
        super().__init__()
        if tensor_product not in CONVOLUTIONS:
            raise ValueError(f"tensor_product must be one of {sorted(CONVOLUTIONS)}, got {tensor_product!r}")
        self.irreps_in = o3.Irreps(irreps_in)
        self.irreps_out = o3.Irreps(irreps_hidden)
        num_scalars, num_vectors = multiplicities(self.irreps_out)
        num_scalars_in = multiplicities(self.irreps_in)[0]
        self.endpoint_features = endpoint_features
        # Invariant: a linear map of the 0e part only, [source | target] halves.
        self.endpoint = torch.nn.Linear(num_scalars_in, 2 * endpoint_features) if endpoint_features else None
        self.convolution = CONVOLUTIONS[tensor_product](
            *multiplicities(self.irreps_in), num_scalars + num_vectors, num_vectors,
            num_edge_features + 2 * endpoint_features, radial_hidden,
        )  # fmt: skip
        self.gate = e3nn_nn.Gate(
            f"{num_scalars}x0e", [torch.nn.functional.silu], f"{num_vectors}x0e", [torch.sigmoid], f"{num_vectors}x1e"
        )
        self.noise_scale = torch.nn.Linear(num_noise_features, self.irreps_out.num_irreps)
        torch.nn.init.zeros_(self.noise_scale.weight)  # scale 1 at initialisation, whatever sigma
        torch.nn.init.ones_(self.noise_scale.bias)
        self.skip = o3.Linear(self.irreps_in, self.irreps_out)
        self.skip_gate = torch.nn.Parameter(torch.zeros(self.irreps_out.num_irreps))
        self.register_buffer("channel", channel_index(self.irreps_out), persistent=False)

    def forward(
        self,
        h: torch.Tensor,
        direction: torch.Tensor,
        edge_features: torch.Tensor,
        edge_weight: torch.Tensor,
        inverse_weight_sum: torch.Tensor,
        edges: GroupedEdges,
        noise_features: torch.Tensor,
    ) -> torch.Tensor:
        """Update node features.

        Parameters
        ----------
        h
            (N, irreps_in.dim) node features.
        direction
            (E, 3) sqrt(3) * unit vector of r_j - r_i.
        edge_features
            (E, num_edge_features) invariant edge features.
        edge_weight
            (E,) envelope weight of each edge in [0, 1].
        inverse_weight_sum
            (N,) 1 / max(sum of incoming edge weights, 1).
        edges
            Source j and target i of each edge, grouped by source.
        noise_features
            (num_noise_features,) or (N, num_noise_features) noise embedding.

        Returns
        -------
        (N, irreps_out.dim) node features.
        """
        source, target = edges.index
        if self.endpoint is not None:
            ends = self.endpoint(h[:, : self.endpoint.in_features])  # [N, 2 w]
            w = self.endpoint_features
            edge_features = torch.cat([edge_features, ends[source, :w], ends[target, w:]], dim=1)
        messages = self.convolution(h, direction, edge_features, edges)
        messages = messages * edge_weight[:, None]  # [E, d]
        aggregated = messages.new_zeros(h.shape[0], messages.shape[1]).index_add_(0, target, messages)
        update = self.gate(self.convolution.mix(aggregated * inverse_weight_sum[:, None]))  # [N, irreps_out.dim]
        scale = self.noise_scale(noise_features) * torch.sigmoid(self.skip_gate)  # [..., channels]
        return self.skip(h) + update * scale[..., self.channel]

    def extra_repr(self) -> str:
        return f"{self.irreps_in} -> {self.irreps_out}"
