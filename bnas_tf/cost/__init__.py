"""What a binary network costs: binary and float MACs, OPs, parameters and model size.

Two ways in:

* `model_cost(model)` measures any built Keras/Larq model (functional,
  nested, subclassed: a `bnas_tf.SuperNet` too) with the conventions of
  `larq.models.summary`, corrected to what deploys (grouped convs trained as
  masked dense convs count as grouped).
* `op_costs`, `supernet_edge_costs`, `edge_cost_tables` and `genotype_cost`
  compute the same figures analytically for a search space's ops, for every
  edge and op of a supernet's cells (arrays aligned with α, for an
  expected-cost term `E[cost] = Σ_edges Σ_o p_o · cost_o`), and for the
  network `bnas_tf.build_network` builds from a genotype, without building
  anything.

Operations, as the binary-network papers count them (Bi-Real Net, BATS and
ReActNet all report OPs this way; METHODS.md §9):

    OPs = FLOPs + BOPs / 64

where BOPs are the binary multiply-accumulates (1-bit inputs and 1-bit
weights: XNOR and popcount, 64 of them per 64-bit instruction) and FLOPs the
float ones. The papers count FLOPs as multiply-accumulates, not as separate
multiplications and additions: ReActNet-A's published 4.82e9 BOPs and 0.12e8
FLOPs are its binary and float MACs (`tests/test_baselines.py` checks both),
and its 0.87e8 OPs are 0.12e8 + 4.82e9 / 64.

Example:
    >>> import bnas_tf as bn
    >>> from bnas_tf import cost
    >>> genotype = bn.random_genotype(bn.SearchSpace.get("lce"), rng=0)
    >>> model = bn.build_network(genotype, layers=5, channels=16, binary_weights=True)
    >>> cost.model_cost(model) == cost.genotype_cost(genotype, layers=5, channels=16)
    True
    >>> cost.model_cost(model).to_dict()["ops"]            # FLOPs + BOPs / 64

References:
    Liu et al., Bi-Real Net: Enhancing the Performance of 1-bit CNNs with
    Improved Representational Capability and Advanced Training Algorithm,
    ECCV 2018, arXiv:1808.00278.
    Bulat et al., BATS: Binary ArchitecTure Search, ECCV 2020, arXiv:2003.01711.
    Liu et al., ReActNet: Towards Precise Binary Neural Network with
    Generalized Activation Functions, ECCV 2020, arXiv:2003.03488.
"""

from bnas_tf.cost._model import BOPS_PER_OP, METRICS, ModelCost, model_cost
from bnas_tf.cost._search import (
    EdgeCosts,
    edge_cost_tables,
    genotype_cost,
    op_costs,
    supernet_edge_costs,
)
from bnas_tf.cost.latency import (
    LatencyEntry,
    LatencyTable,
    LatencyTableError,
    edge_latency_tables,
    latency_table,
)

__all__ = [
    "BOPS_PER_OP",
    "METRICS",
    "EdgeCosts",
    "LatencyEntry",
    "LatencyTable",
    "LatencyTableError",
    "ModelCost",
    "edge_cost_tables",
    "edge_latency_tables",
    "genotype_cost",
    "latency_table",
    "model_cost",
    "op_costs",
    "supernet_edge_costs",
]
