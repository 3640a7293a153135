"""Recipes (one paper's defaults at once), the method registry, and deployable defaults."""

import json
import logging

import larq as lq
import numpy as np
import pytest
import tensorflow as tf

import bnas_tf as bn
from bnas_tf import cli, recipes
from bnas_tf.search_run import SearchConfig, build_supernet, run_search
from bnas_tf.train_run import TrainConfig

IMAGE = (8, 8, 3)


def parse(*argv):
    return cli.build_parser().parse_args(list(argv))


def binary_convs(net):
    """(op, conv) of every binary conv inside the supernet's mixed ops."""
    return [(op, op.conv) for cell in net.cells for mixed in cell.edges for op in mixed._ops
            if isinstance(op, bn.ops.BinaryConvBN)]


def test_registry():
    assert recipes.names() == ("bats", "bnas", "hmnas", "adambnn")
    assert recipes.get(None) is recipes.DEFAULTS
    assert recipes.get("bnas") is recipes.get(recipes.get("bnas"))
    with pytest.raises(ValueError, match="Unknown recipe 'darts'. Known recipes: bats, bnas, "
                                         "hmnas, adambnn"):
        recipes.get("darts")
    with pytest.raises(ValueError, match="already registered"):
        recipes.register(recipes.get("bats"))
    assert recipes.supernet_class("darts") is bn.SuperNet
    assert recipes.supernet_class("hmnas") is bn.HMNASSuperNet
    assert not hasattr(bn.hmnas, "supernet_class")  # one home: bnas_tf.recipes
    with pytest.raises(ValueError, match="'darts', 'hmnas'"):
        recipes.supernet_class("enas")


@pytest.mark.parametrize("name", [None, *recipes.names()])
def test_every_setting_has_a_source_and_the_config_round_trips(name):
    recipe = recipes.get(name)
    settings = {*recipe.SEARCH_SETTINGS, *recipe.TRAIN_SETTINGS.values()}
    assert {key for key, _ in recipe.sources} == settings
    assert all(recipe.source(key) for key in settings)
    config = recipe.get_config()
    assert json.loads(json.dumps(config)) == config  # JSON-only values
    assert recipes.Recipe.from_config(config) == recipe
    assert recipe.departures  # each says where it departs from the papers
    text = recipe.describe()
    assert all(key in text for key in settings)
    incomplete = {**config, "sources": {k: v for k, v in config["sources"].items()
                                        if k != "temperature"}}
    with pytest.raises(ValueError, match=r"no source for \['temperature'\]"):
        recipes.Recipe.from_config(incomplete)


def test_each_recipe_keeps_to_its_paper():
    bats, bnas, hmnas, adambnn = (recipes.get(n) for n in recipes.names())
    # BATS: its grouped space and T = 0.2, without BNAS's inter-cell skip and diversity term
    assert (bats.space, bats.temperature, bats.cell_skip, bats.diversity) == ("bats", 0.2,
                                                                               False, 0.0)
    assert not bats.binary_search_weights and bats.train_channels == 36  # 12 groups x 3
    # BNAS: binary weights and activations during search, skips, diversity, XNOR scaling
    assert (bnas.space, bnas.cell_skip, bnas.diversity, bnas.tau) == ("bnas", True, 1.0, 7.7)
    assert bnas.binary_search_weights and bnas.kernel_quantizer == "magnitude_aware_sign"
    assert bnas.temperature == 1.0
    assert (hmnas.method, hmnas.cell_skip, hmnas.temperature, hmnas.diversity) == (
        "hmnas", False, 1.0, 0.0)
    assert (adambnn.weight_decay, adambnn.kernel_quantizer) == (5e-6, "magnitude_aware_sign")
    # no recipe: bnas_tf's defaults, over the space whose networks LCE deploys
    assert recipes.DEFAULTS.space == bn.search_space.DEFAULT_SPACE == "lce"


def test_bats_recipe_has_no_inter_cell_skip_unless_asked_for():
    assert cli.search_config(parse("search", "--output", "R", "--recipe", "bats")).cell_skip is False
    assert cli.search_config(parse("search", "--output", "R", "--recipe", "bats",
                                   "--cell-skip")).cell_skip is True
    assert cli.train_config(parse("train", "--genotype", "g.json", "--output", "T",
                                  "--recipe", "bats")).cell_skip is False
    assert SearchConfig(recipe="bats").diversity == 0.0
    assert TrainConfig(recipe="bats").channels == 36  # 12 groups x 3, BATS's CIFAR width
    assert SearchConfig().cell_skip is True  # no recipe: bnas_tf's default template


def test_explicit_flags_override_the_recipe_and_are_recorded():
    config = cli.search_config(parse("search", "--output", "R", "--recipe", "bnas",
                                     "--temperature", "0.5", "--diversity", "0",
                                     "--arch-beta1", "0.9"))
    assert (config.recipe, config.space, config.binary_search_weights) == ("bnas", "bnas", True)
    assert (config.temperature, config.diversity, config.arch_beta_1) == (0.5, 0.0, 0.9)
    assert config.tau == 7.7 and config.arch_beta_2 == 0.999  # the rest: the recipe's
    assert cli.search_config(parse("search", "--output", "R", "--recipe", "bnas",
                                   "--no-binary-search-weights")).binary_search_weights is False
    train = cli.train_config(parse("train", "--genotype", "g.json", "--output", "T",
                                   "--recipe", "adambnn", "--weight-decay", "0"))
    assert (train.kernel_quantizer, train.weight_decay, train.channels) == (
        "magnitude_aware_sign", 0.0, 32)
    defaults = cli.train_config(parse("train", "--genotype", "g.json", "--output", "T"))
    assert (defaults.channels, defaults.weight_decay, defaults.kernel_quantizer) == (32, 5e-6,
                                                                                    None)
    # a resumed run reads config.json back: resolved values stay as they were
    saved = json.loads(json.dumps(vars(config)))
    assert SearchConfig.from_dict(saved) == config


def test_bnas_recipe_searches_with_binary_weights_and_activations():
    config = SearchConfig(recipe="bnas", nodes=1, layers=1, channels=4)
    net = build_supernet(config, num_classes=4)
    x = tf.random.normal([4, *IMAGE], seed=0)
    net(x)
    convs = binary_convs(net)
    assert convs
    for _, conv in convs:
        assert isinstance(conv.input_quantizer, lq.quantizers.SteSign)
        assert isinstance(conv.kernel_quantizer, lq.quantizers.MagnitudeAwareSign)
        with lq.context.quantized_scope(True):
            kernel = conv.kernel.numpy()  # what the forward pass uses: ±mean|W| per channel
        latent = conv.kernel.latent_variable.numpy()
        np.testing.assert_allclose(np.abs(kernel), np.broadcast_to(
            np.abs(latent).mean(axis=(0, 1, 2)), kernel.shape), rtol=1e-5)
    net.compile()
    before = [v.numpy().copy() for v in net.weight_variables]
    net.weight_step(x, tf.constant([0, 1, 2, 3]))
    assert any(not np.array_equal(b, v.numpy()) for b, v in zip(before, net.weight_variables,
                                                                  strict=True))
    genotype = net.genotype()
    assert genotype.search_space.binary_search_weights
    # training follows the two-stage recipe: stage 1 has real weights again
    model = bn.build_network(genotype, num_classes=4, layers=1, channels=4, input_shape=IMAGE)
    assert all(layer.kernel_quantizer is None for layer in bn.training.binary_conv_layers(model))
    # without the recipe, the supernet searches with real-valued weights (BATS, §6)
    real = build_supernet(SearchConfig(space="bnas", nodes=1, layers=1, channels=4), 4)
    assert all(conv.kernel_quantizer is None for _, conv in binary_convs(real))


def test_hmnas_recipe_builds_the_hmnas_supernet_without_skips():
    net = build_supernet(SearchConfig(recipe="hmnas", nodes=1, layers=1, channels=4), 4)
    assert isinstance(net, bn.HMNASSuperNet) and net.cell_skip is False
    assert net.temperature == pytest.approx(1.0) and net.space.name == "lce"


def test_run_search_records_the_recipe_and_binarizes_during_fit(tmp_path):
    seen = {}

    class Probe(tf.keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen["quantizers"] = {type(conv.kernel_quantizer).__name__
                                  for _, conv in binary_convs(self.model)}

    config = SearchConfig(recipe="bnas", dataset="synthetic", download=False, limit=32, nodes=1,
                          layers=1, channels=4, epochs=1, batch_size=8, augment=False,
                          diversity=0.0)
    result = run_search(config, tmp_path / "RUN", extra_callbacks=[Probe()], verbose=0)
    saved = json.loads((result.output_dir / "config.json").read_text())
    assert saved["recipe"] == "bnas" and saved["binary_search_weights"] is True
    assert saved["diversity"] == 0.0 and saved["cell_skip"] is True
    assert seen["quantizers"] == {"MagnitudeAwareSign"}
    assert result.genotype.search_space.binary_search_weights


def test_deployability_is_reported_at_search_time(caplog):
    assert bn.search_space.lce_float_widths(bn.SearchSpace.get("bats"), [36, 72, 144]) == {
        36: 3, 72: 3, 144: 3}
    assert bn.search_space.lce_float_widths(bn.SearchSpace.get("lce"), [16, 32, 64, 128]) == {}
    assert bn.search_space.lce_float_widths(bn.SearchSpace.get("bnas"), [36]) == {}
    with caplog.at_level(logging.WARNING, logger="bnas_tf.search_space"):
        bn.SuperNet(bn.SearchSpace.get("lce", nodes=1), num_classes=4, layers=1, channels=4)
        assert not caplog.records
        bn.SuperNet(bn.SearchSpace.get("bats", nodes=1), num_classes=4, layers=3, channels=6)
    (record,) = caplog.records
    message = record.getMessage()
    assert "'bats'" in message and "3 input channels per group at 6/12/24 channels" in message
    assert "multiple of 32" in message and "--space lce" in message
