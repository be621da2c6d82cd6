"""F_theta: the SE(3)-equivariant (not parity-equivariant) message-passing network of JAMUN."""

from __future__ import annotations

import torch
from e3nn import o3

from jamun.data.graph import GraphBatch
from jamun.model.convolution import GroupedEdges
from jamun.model.embedding import NUM_NOISE_FEATURES, AtomEmbedding, NoiseEmbedding
from jamun.model.layers import InteractionBlock
from jamun.model.radial import RadialEmbedding

IRREPS_OUT = {"vector": o3.Irreps("1x1e"), "energy": o3.Irreps("1x0e")}


def check_hidden_irreps(hidden_irreps: str) -> o3.Irreps:
    """Parse hidden irreps; only scalars 0e and pseudovectors 1e, both present, are allowed."""
    try:
        irreps = o3.Irreps(hidden_irreps).simplify()
    except (ValueError, AssertionError) as error:
        raise ValueError(f"hidden_irreps {hidden_irreps!r} is not an e3nn irreps string: {error}") from None
    allowed = {o3.Irrep("0e"), o3.Irrep("1e")}
    present = {ir for mul, ir in irreps if mul > 0}
    if present != allowed:
        raise ValueError(
            f"hidden_irreps {hidden_irreps!r} must contain exactly the irreps 0e and 1e, e.g. '32x0e + 8x1e'"
        )
    return irreps


class EquivariantNetwork(torch.nn.Module):
    """F_theta(positions, c_noise): one 1e vector per atom, or one invariant energy per atom.

    Equivariant (vector output) or invariant (energy output) to rotations and translations of
    ``pos``; not to reflections.

    Parameters
    ----------
    hidden_irreps
        Hidden features, e.g. ``"120x0e + 32x1e"`` (paper) or ``"32x0e + 8x1e"`` (demo).
    num_layers
        Number of :class:`InteractionBlock` layers (at least 2: one layer cannot form the
        pseudovector products that distinguish mirror images).
    num_radial
        Gaussian basis size of edge lengths; the edge-type embedding has the same width.
    radial_hidden
        Hidden width of each layer's edge-weight MLP (dominates the parameter count).
    r_max
        Length where non-bonded messages have faded to zero, in the unit of ``pos``.
    endpoint_features
        Width of each endpoint's scalar projection in the edge features (0: off); see
        :class:`InteractionBlock`.
    tensor_product
        ``"uvw"`` or ``"uvu"``: the convolution of each layer (:class:`InteractionBlock`).
    output
        ``"vector"``: (N, 3), the 1e readout; ``"energy"``: (N,), the 0e readout, an atom's share of
        a scalar energy (:class:`jamun.model.denoiser.Denoiser` takes its gradient).
    """

    def __init__(
        self,
        hidden_irreps: str,
        num_layers: int,
        num_radial: int,
        radial_hidden: int,
        r_max: float,
        endpoint_features: int = 0,
        tensor_product: str = "uvw",
        output: str = "vector",
    ) -> None:
        super().__init__()
        if output not in IRREPS_OUT:
            raise ValueError(f"output must be one of {sorted(IRREPS_OUT)}, got {output!r}")
        self.output = output
        irreps_hidden = check_hidden_irreps(hidden_irreps)
        if num_layers < 2:
            raise ValueError(f"num_layers must be >= 2 (one layer cannot distinguish mirror images), got {num_layers}")
        num_scalars = sum(mul for mul, ir in irreps_hidden if ir.l == 0)
        self.atom_embedding = AtomEmbedding(num_scalars)
        self.noise_embedding = NoiseEmbedding()
        self.radial = RadialEmbedding(num_radial, r_max)
        self.edge_type = torch.nn.Embedding(2, num_radial)  # 0 non-bonded, 1 covalent bond
        irreps_in = [o3.Irreps(f"{num_scalars}x0e")] + [irreps_hidden] * (num_layers - 1)
        self.layers = torch.nn.ModuleList(
            InteractionBlock(irreps, irreps_hidden, 2 * num_radial, radial_hidden, NUM_NOISE_FEATURES,
                             endpoint_features, tensor_product)
            for irreps in irreps_in
        )  # fmt: skip
        self.readout = o3.Linear(irreps_hidden, IRREPS_OUT[output])

    def forward(self, pos: torch.Tensor, graph: GraphBatch, edges: GroupedEdges, c_noise: torch.Tensor) -> torch.Tensor:
        """Network output F.

        Parameters
        ----------
        pos
            (N, 3) scaled positions c_in * y.
        graph
            The atoms' features.
        edges
            Bonds and radius pairs (:func:`jamun.data.graph.graph_edges`) grouped by source atom;
            bonds are never faded by the cutoff envelope.
        c_noise
            log10(sigma / nm): a scalar tensor, or (N,) with one level per atom (a batch whose
            graphs have different sigmas; the noise embedding is then per atom).

        Returns
        -------
        (N, 3) vector per atom (the 1e output; its components are x, y, z), or (N,) energy per
        atom with ``output="energy"``.
        """
        source, target = edges.index
        vectors = pos[source] - pos[target]  # [E, 3]
        # l = 1 harmonics labelled 1e (pseudovector) although r_hat is a vector: the cross-product
        # path then mixes parity-even and parity-odd functions of the geometry, so mirror images
        # (chirality) can be told apart, while rotations act exactly as on vectors.
        direction = 3**0.5 * torch.nn.functional.normalize(vectors, dim=1)  # [E, 3]
        basis, envelope = self.radial(vectors.norm(dim=1))
        edge_features = torch.cat([basis, self.edge_type(edges.is_bond.long())], dim=1)  # [E, 2 * num_radial]
        edge_weight = torch.where(edges.is_bond, torch.ones_like(envelope), envelope)  # [E]
        weight_sum = pos.new_zeros(pos.shape[0]).index_add_(0, target, edge_weight)
        inverse_weight_sum = 1.0 / weight_sum.clamp(min=1.0)  # [N]
        noise_features = self.noise_embedding(c_noise)
        h = self.atom_embedding(graph)
        for layer in self.layers:
            h = layer(h, direction, edge_features, edge_weight, inverse_weight_sum, edges, noise_features)
        out = self.readout(h)
        return out[:, 0] if self.output == "energy" else out
