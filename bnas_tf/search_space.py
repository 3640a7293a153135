"""Search spaces: which ops an edge chooses from, and how they are built.

Three binary spaces are predefined (METHODS.md §1):

| space  | binary convs                     | skip_connect | `none` selectable | cell-input 1×1 convs |
|--------|----------------------------------|--------------|-------------------|----------------------|
| `bats` | grouped, 3 channels per group    | yes          | no                | real-valued          |
| `bnas` | dense                            | no           | yes               | real-valued          |
| `lce`  | grouped only at 32·k channels    | yes          | no                | binary               |

The `lce` space is the deployment space and the default (`DEFAULT_SPACE`):
every conv inside a cell is binary and converts to Larq Compute Engine's
`LceBconv2d`, and the inter-cell skips double channels by repeating them, so
only the stem, the first cell's skip projection and the classifier hold
real-valued weights. LCE leaves the grouped binary convs of `bats` (3 input
channels per group) in float; `lce_float_widths` finds such convs, and
`SuperNet` logs a warning when it is built over them.

Weights are real-valued during search unless `binary_search_weights=True`
(BNAS searches with binary weights; `bnas_tf.recipes.get("bnas")` sets it).

Example:
    >>> space = bn.SearchSpace.get("bats")
    >>> space.op_names[:3]
    ('none', 'max_pool_3x3', 'avg_pool_3x3')
    >>> custom = bn.SearchSpace(["none", "skip_connect", "bin_conv_3x3"], nodes=3)
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import tensorflow as tf

from bnas_tf import ops
from bnas_tf.errors import SearchSpaceError

__all__ = ["SearchSpace", "DEFAULT_SPACE", "LCE_GROUP_CHANNELS", "lce_float_widths",
           "warn_if_not_deployable"]

log = logging.getLogger(__name__)

DEFAULT_SPACE = "lce"
"""The space used when none is named: its searched networks deploy with binary kernels."""

LCE_GROUP_CHANNELS = 32
"""LCE converts a grouped binary conv only with a multiple of this many input channels per group."""

_CONVS = ("bin_conv_3x3", "bin_conv_5x5", "bin_dil_conv_3x3", "bin_dil_conv_5x5")
_POOLS = ("max_pool_3x3", "avg_pool_3x3")

_PRESETS: dict[str, dict] = {
    "bats": {"op_names": ("none", *_POOLS, "skip_connect", *_CONVS), "group_channels": 3},
    "bnas": {"op_names": ("none", *_POOLS, *_CONVS), "selectable_none": True,
             "weight_quantizer": "magnitude_aware_sign"},
    "lce": {"op_names": ("none", *_POOLS, "skip_connect", *_CONVS), "group_channels": 32,
            "convertible_groups": True, "binary_cell_inputs": True,
            "parameter_free_skips": True},
}


class SearchSpace:
    """An ordered list of candidate ops plus the settings used to build them.

    The order of `op_names` is the column order of the architecture
    parameters α and of every probability table bnas_tf writes.

    Args:
        op_names: registered op names (see `bnas_tf.ops.registered_ops()`).
        name: a label saved with genotypes.
        nodes: intermediate nodes per cell.
        input_quantizer: `ste_sign`, `approx_sign` or `swish_sign`.
        group_channels: channels per group of binary convs, None for dense.
        convertible_groups: use groups only where Larq Compute Engine can run
            them (channels per group a multiple of `group_channels`).
        selectable_none: whether derivation may pick the `none` op (BNAS).
        weight_quantizer: Larq quantizer used once weights are binarized
            (`ste_sign`, or `magnitude_aware_sign` for XNOR-style scaling).
        binary_cell_inputs: make the cells' 1×1 preprocessing convs (and
            factorized reductions) binary, as the `lce` space does.
        parameter_free_skips: where the inter-cell skip doubles the channels,
            repeat them instead of a real-valued 1×1 conv (the `lce` space).
        binary_search_weights: binarize the binary convs' kernels (with
            `weight_quantizer`) already during search, as BNAS does; False
            searches with real-valued latent weights (BATS, METHODS.md §6).
            Ops built for a genotype's network pass `binary_weights` explicitly.

    Raises:
        SearchSpaceError: for unknown or duplicate op names and bad settings.
    """

    def __init__(self, op_names: Sequence[str], *, name: str = "custom", nodes: int = 4,
                 input_quantizer: str = "ste_sign", group_channels: int | None = None,
                 convertible_groups: bool = False, selectable_none: bool = False,
                 weight_quantizer: str = "ste_sign", binary_cell_inputs: bool = False,
                 parameter_free_skips: bool = False, binary_search_weights: bool = False):
        op_names = tuple(op_names)
        if not op_names:
            raise SearchSpaceError("A search space needs at least one op name.")
        duplicates = sorted({n for n in op_names if op_names.count(n) > 1})
        if duplicates:
            raise SearchSpaceError(f"Op names must be unique; repeated: {duplicates}.")
        for op_name in op_names:
            ops.get(op_name)  # raises with the list of known ops
        if not isinstance(nodes, int) or nodes < 1:
            raise SearchSpaceError(f"Expected nodes >= 1, got {nodes!r}.")
        if set(op_names) == {"none"}:
            raise SearchSpaceError("A search space of only 'none' builds nothing; add real ops.")
        if weight_quantizer not in ("ste_sign", "magnitude_aware_sign"):
            raise SearchSpaceError(
                "Expected weight_quantizer 'ste_sign' or 'magnitude_aware_sign', "
                f"got {weight_quantizer!r}.")
        self.op_names = op_names
        self.name = name
        self.nodes = nodes
        self.selectable_none = bool(selectable_none)
        self.weight_quantizer = weight_quantizer
        self.parameter_free_skips = bool(parameter_free_skips)
        self.binary_search_weights = bool(binary_search_weights)
        self.options = ops.OpOptions(input_quantizer=input_quantizer,
                                     group_channels=group_channels,
                                     convertible_groups=convertible_groups,
                                     binary_cell_inputs=bool(binary_cell_inputs))

    @classmethod
    def get(cls, identifier: str | dict | SearchSpace, **overrides) -> SearchSpace:
        """A predefined space by name (`bats`, `bnas`, `lce`), a config dict, or a space.

        Keyword arguments override the preset, e.g. `get("bats", nodes=3)`.
        """
        if isinstance(identifier, SearchSpace):
            return identifier if not overrides else cls.from_config(
                {**identifier.get_config(), **overrides})
        if isinstance(identifier, dict):
            return cls.from_config({**identifier, **overrides})
        if isinstance(identifier, str) and identifier in _PRESETS:
            return cls.from_config({"name": identifier, **_PRESETS[identifier], **overrides})
        raise SearchSpaceError(
            f"Unknown search space {identifier!r}. Known spaces: {', '.join(_PRESETS)}; "
            "or build one with bnas_tf.SearchSpace(op_names=[...]).")

    @staticmethod
    def names() -> tuple[str, ...]:
        """Names of the predefined spaces."""
        return tuple(_PRESETS)

    @property
    def num_ops(self) -> int:
        return len(self.op_names)

    @property
    def num_edges(self) -> int:
        """Edges of one cell: node j has j + 2 inputs."""
        return sum(2 + j for j in range(self.nodes))

    def edges(self) -> list[tuple[int, int]]:
        """`(source, node)` per edge in α row order; sources 0, 1 are cell inputs."""
        return [(i, j + 2) for j in range(self.nodes) for i in range(j + 2)]

    def build_op(self, op_name: str, filters: int, strides: int, *, affine: bool = False,
                 binary_weights: bool | None = None, masked_groups: bool = False
                 ) -> tf.keras.layers.Layer:
        """Instantiate one op of this space (see `bnas_tf.ops.OpOptions` for the flags).

        `binary_weights=None` (what the supernet passes) follows
        `binary_search_weights`.
        """
        if op_name not in self.op_names:
            raise SearchSpaceError(
                f"Op {op_name!r} is not in search space {self.name!r} ({', '.join(self.op_names)}).")
        options = ops.OpOptions(
            input_quantizer=self.options.input_quantizer,
            kernel_quantizer=self._kernel_quantizer(binary_weights),
            group_channels=self.options.group_channels,
            convertible_groups=self.options.convertible_groups,
            affine=affine,
            masked_groups=masked_groups,
            binary_cell_inputs=self.options.binary_cell_inputs,
        )
        return ops.get(op_name)(filters, strides, options)

    def build_cell_input(self, filters: int, reduction_prev: bool, *, affine: bool = True,
                         binary_weights: bool | None = None) -> tf.keras.layers.Layer:
        """The preprocessing conv of a cell input (see `bnas_tf.ops.cell_input`)."""
        options = ops.OpOptions(
            input_quantizer=self.options.input_quantizer,
            kernel_quantizer=self._kernel_quantizer(binary_weights),
            affine=affine,
            binary_cell_inputs=self.options.binary_cell_inputs,
        )
        return ops.cell_input(filters, reduction_prev, options)

    def _kernel_quantizer(self, binary_weights: bool | None) -> str | None:
        if binary_weights is None:
            binary_weights = self.binary_search_weights
        return self.weight_quantizer if binary_weights else None

    def lce_float_widths(self, widths: Iterable[int]) -> dict[int, int]:
        """See the module function `lce_float_widths`."""
        return lce_float_widths(self, widths)

    def get_config(self) -> dict:
        return {
            "op_names": list(self.op_names),
            "name": self.name,
            "nodes": self.nodes,
            "input_quantizer": self.options.input_quantizer,
            "group_channels": self.options.group_channels,
            "convertible_groups": self.options.convertible_groups,
            "binary_cell_inputs": self.options.binary_cell_inputs,
            "parameter_free_skips": self.parameter_free_skips,
            "selectable_none": self.selectable_none,
            "weight_quantizer": self.weight_quantizer,
            "binary_search_weights": self.binary_search_weights,
        }

    @classmethod
    def from_config(cls, config: dict) -> SearchSpace:
        if not isinstance(config, dict):
            raise SearchSpaceError(f"Expected a search-space config dict, got {config!r}.")
        config = dict(config)
        try:
            op_names = config.pop("op_names")
        except KeyError:
            raise SearchSpaceError("A search-space config needs 'op_names'.") from None
        try:
            return cls(op_names, **config)
        except TypeError as error:
            raise SearchSpaceError(f"Bad search-space config: {error}.") from None

    def __eq__(self, other):
        return isinstance(other, SearchSpace) and self.get_config() == other.get_config()

    def __hash__(self):
        return hash(tuple(self.op_names))

    def __repr__(self):
        return f"SearchSpace({list(self.op_names)!r}, name={self.name!r}, nodes={self.nodes})"


def lce_float_widths(space: SearchSpace, widths: Iterable[int]) -> dict[int, int]:
    """The cell widths at which Larq Compute Engine would keep the space's binary convs float.

    LCE converts a grouped binary conv only when its input channels per group
    are a multiple of `LCE_GROUP_CHANNELS` (32); dense ones always convert.

    Args:
        space: the search space.
        widths: channels per node of the cells (e.g. 16, 32, 64).

    Returns:
        `{width: input channels per group}` for each width whose grouped binary
        convs stay float; empty when every binary conv converts.

    Example:
        >>> lce_float_widths(SearchSpace.get("bats"), [36, 72]), lce_float_widths(
        ...     SearchSpace.get("lce"), [32, 64])
        ({36: 3, 72: 3}, {})
    """
    if not set(_CONVS) & set(space.op_names) or not space.options.group_channels:
        return {}
    found = {}
    for width in sorted(set(widths)):
        groups = ops.resolve_groups(width, space.options.group_channels,
                                    space.options.convertible_groups)
        if groups > 1 and (width // groups) % LCE_GROUP_CHANNELS:
            found[width] = width // groups
    return found


_WARNED: set[tuple] = set()


def warn_if_not_deployable(space: SearchSpace, widths: Iterable[int]) -> bool:
    """Log one warning (once per space and widths) if LCE would keep binary convs float.

    Returns:
        True when the network's grouped binary convs will not run as LCE binary ops.
    """
    found = lce_float_widths(space, widths)
    if not found:
        return False
    key = (repr(space.get_config()), tuple(sorted(found.items())))
    if key not in _WARNED:
        _WARNED.add(key)
        by_count: dict[int, list[str]] = {}
        for width, count in found.items():
            by_count.setdefault(count, []).append(str(width))
        per_group = "; ".join(f"{count} input channels per group at {'/'.join(ws)} channels"
                              for count, ws in by_count.items())
        log.warning(
            "Search space %r gives its grouped binary convs %s. Larq Compute Engine converts "
            "a grouped binary conv only with a multiple of %d input channels per group, so "
            "the exported network will run these convs in float. For binary kernels on "
            "device, search the %r space (bnas-tf search --space %s).",
            space.name, per_group, LCE_GROUP_CHANNELS, DEFAULT_SPACE, DEFAULT_SPACE)
    return True
