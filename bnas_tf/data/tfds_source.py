"""TensorFlow Datasets as a streamed source: `load("tfds:NAME", data_dir)`.

The dataset must be prepared in `data_dir` (by `tfds build NAME --data_dir
DIR`, by the builder's `download_and_prepare`, or copied from a machine that
did). Records are read with the images still encoded and decoded by the same
tf.data pipeline as an image folder. Needs the `tfds` extra
(`pip install bnas_tf[tfds]`).

Labels are read only when needed (a stratified `holdout`, a balanced
subset): one pass over the records, images skipped, cached for the session.
A subset of records other than the first ones (holdout parts, the halves of
`search_pairs`) is read by passing over the whole split and keeping records
by index, in stored order, shuffled through a buffer of `SHUFFLE_BUFFER`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf

from bnas_tf.data import checks
from bnas_tf.data.core import StreamingData
from bnas_tf.data.normalization import channel_stats, parse_stats, standard_stats
from bnas_tf.errors import DataError

SHUFFLE_BUFFER = 4096
"""Encoded records in the shuffle buffer of a TFDS split (files are shuffled too)."""

STATS_SAMPLE = 500


def _tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise DataError(
            "tfds: datasets need tensorflow-datasets: pip install 'bnas_tf[tfds]' "
            f"(tensorflow-datasets==4.9.10). ({e})"
        ) from e
    return tfds


@dataclass(frozen=True, eq=False)
class TFDSSplit:
    """A split of a prepared TFDS dataset, optionally a subset of its records.

    Attributes:
        name: the TFDS name ("mnist", "imagenet2012/subset:5.0.0", ...).
        data_dir: where it is prepared (None: TFDS' default).
        split: a TFDS split string, e.g. "train" or "train[:1000]".
        image_key: the image feature.
        label_key: the ClassLabel feature.
        count: records in `split`.
        indices: the records used (positions in the split's stored order), or
            None for all.
    """

    name: str
    data_dir: str | None
    split: str
    image_key: str
    label_key: str
    count: int
    indices: np.ndarray | None = None
    _cache: dict = field(default_factory=dict, repr=False)  # shared labels of the whole split

    def __len__(self) -> int:
        return self.count if self.indices is None else len(self.indices)

    def describe(self) -> str:
        where = f" in {self.data_dir}" if self.data_dir else ""
        return f"tfds:{self.name} {self.split}{where}"

    def _builder(self):
        return _tfds().builder(self.name, data_dir=self.data_dir)

    def _records(self, shuffle_files: bool, seed: int) -> tf.data.Dataset:
        tfds = _tfds()
        config = tfds.ReadConfig(
            shuffle_seed=seed, interleave_cycle_length=16 if shuffle_files else 1
        )
        return self._builder().as_dataset(
            split=self.split,
            shuffle_files=shuffle_files,
            decoders={self.image_key: tfds.decode.SkipDecoding()},
            read_config=config,
        )

    @property
    def labels(self) -> np.ndarray:
        """int64 labels of the used records (one pass over the split on first use)."""
        if "labels" not in self._cache:
            ds = self._records(False, 0).map(lambda ex: ex[self.label_key]).batch(8192)
            parts = list(ds.as_numpy_iterator())
            self._cache["labels"] = (
                np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)
            )
        labels = self._cache["labels"]
        return labels if self.indices is None else labels[self.indices]

    def take(self, indices: np.ndarray) -> TFDSSplit:
        indices = np.asarray(indices, np.int64)
        base = np.arange(self.count) if self.indices is None else self.indices
        return TFDSSplit(
            self.name, self.data_dir, self.split, self.image_key, self.label_key, self.count,
            base[indices], self._cache,
        )

    def images(
        self,
        load: Callable[[tf.Tensor, tf.Tensor], tf.Tensor],
        *,
        shuffle: bool,
        seed: int,
        shard: tuple[int, int] | None,
    ) -> tf.data.Dataset:
        """`(image, label)` pairs: records read (files shuffled), decoded in parallel."""
        prefix = self.indices is not None and np.array_equal(
            self.indices, np.arange(len(self.indices))
        )
        if self.indices is None or prefix:
            ds = self._records(shuffle and not prefix, seed)
            if prefix:  # the first records (e.g. a few test images): stop reading early
                ds = ds.take(len(self.indices))
            if shard is not None:
                ds = ds.shard(*shard)
        else:  # any other subset (holdout, search halves): read the split, keep by index
            used = self.indices if shard is None else self.indices[shard[1] :: shard[0]]
            mask = np.zeros(self.count, bool)
            mask[used] = True
            mask_t = tf.constant(mask)
            ds = self._records(False, seed).enumerate()
            ds = ds.filter(lambda i, ex: tf.gather(mask_t, i)).map(lambda i, ex: ex)
        ds = ds.map(lambda ex: (ex[self.image_key], ex[self.label_key]))
        if shuffle:
            ds = ds.shuffle(min(len(self), SHUFFLE_BUFFER), seed=seed,
                            reshuffle_each_iteration=True)
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        seeds = seeds.batch(4).map(lambda s: tf.reshape(s, (2, 2)))
        return tf.data.Dataset.zip((ds, seeds)).map(
            lambda pair, s: (load(pair[0], s), tf.cast(pair[1], tf.int64)),
            num_parallel_calls=tf.data.AUTOTUNE,
        )


def load_tfds(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    image_size: int | tuple[int, int] | None = None,
    limit: int | None = None,
    download: bool = True,
    stats=None,
) -> StreamingData:
    """Describe a prepared TensorFlow Datasets image-classification dataset for streaming.

    The image and label features are the dataset's `supervised_keys` (default
    "image" and "label"); the label must be a `ClassLabel`. The test split is
    "test", or "validation" when there is no "test" (ImageNet).

    Args:
        name: TFDS name, optionally with config and version
            ("imagenet2012", "cifar10:3.0.2", ...).
        data_dir: where it is prepared (None: TFDS' default `~/tensorflow_datasets`).
        image_size: `(height, width)` (or one int) to resize/crop to; required
            when the dataset's images have no fixed size.
        limit: keep the first `limit` training and `limit // 5` test records.
        download: prepare the dataset with TFDS when it is not prepared yet.
        stats: None (standard constants for known names, else estimated from
            the first `STATS_SAMPLE` training records, which TFDS stores
            shuffled), a dataset name, or a `(mean, std)` pair.

    Returns:
        A `StreamingData` named "tfds:NAME".

    Raises:
        DataError: tensorflow-datasets missing, the dataset not prepared (and
            not preparable), no ClassLabel, unknown image size.

    Example:
        >>> data = load_tfds("imagenet2012", "/data/tfds", image_size=224)  # doctest: +SKIP
    """
    tfds = _tfds()
    data_dir = None if data_dir is None else os.fspath(os.path.expanduser(data_dir))
    image_size = checks.check_image_size(image_size)
    where = f" in {data_dir}" if data_dir else ""
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as e:  # TFDS raises its own DatasetNotFoundError and others
        raise DataError(
            f"TFDS dataset {name!r} not found{where} ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}). Prepare it with "
            f"`tfds build {name} --data_dir DIR` and pass that DIR as data_dir."
        ) from e
    if not builder.is_prepared():
        if not download:
            raise DataError(
                f"TFDS dataset {name!r} is not prepared{where}, and download=False. Prepare it "
                f"with `tfds build {name} --data_dir DIR` and pass that DIR as data_dir."
            )
        try:
            builder.download_and_prepare()
        except Exception as e:  # network, manual-download datasets (ImageNet), ...
            raise DataError(
                f"Could not prepare TFDS dataset {name!r}{where} ({type(e).__name__}: {e}). "
                f"Prepare it by hand (`tfds build {name} --data_dir DIR`) and pass data_dir."
            ) from e
    info = builder.info
    image_key, label_key = _keys(info, name)
    labels = info.features[label_key]
    image = info.features[image_key]
    height, width, channels = (tuple(image.shape) + (None,) * 3)[:3]
    channels = 1 if channels == 1 else 3
    if image_size is None:
        if not height or not width:
            raise DataError(
                f"Images of tfds:{name} have no fixed size (shape {image.shape}). Pass "
                "image_size=(height, width), e.g. image_size=224."
            )
        image_size = (int(height), int(width))
    splits = {}
    test_name = "test" if "test" in info.splits else "validation"
    for role, split, count in (("train", "train", limit), ("test", test_name, limit and limit // 5)):
        if split not in info.splits:
            raise DataError(
                f"tfds:{name} has no {split!r} split (it has {', '.join(info.splits)}). "
                "bnas_tf needs a train split and a test (or validation) split."
            )
        spec = split if count is None else f"{split}[:{count}]"
        splits[role] = TFDSSplit(
            name, data_dir, spec, image_key, label_key, int(info.splits[spec].num_examples)
        )
    data = StreamingData(
        splits["train"], splits["test"], name=f"tfds:{name}", class_names=tuple(labels.names),
        image_size=image_size, channels=channels, mean=(0.0,) * channels,
        std=(1.0,) * channels,
    )
    return _with_stats(data, stats, name)


def _keys(info, name: str) -> tuple[str, str]:
    keys = info.supervised_keys if info.supervised_keys else ("image", "label")
    if len(keys) != 2 or not all(isinstance(k, str) for k in keys):
        keys = ("image", "label")
    image_key, label_key = keys
    features = info.features
    tfds = _tfds()
    if image_key not in features or not isinstance(features[image_key], tfds.features.Image):
        raise DataError(f"tfds:{name} has no image feature {image_key!r}; it has "
                        f"{', '.join(features.keys())}.")
    if label_key not in features or not isinstance(features[label_key],
                                                   tfds.features.ClassLabel):
        raise DataError(f"tfds:{name} has no ClassLabel feature {label_key!r}; bnas_tf "
                        "needs an image-classification dataset.")
    return image_key, label_key


def _with_stats(data: StreamingData, stats, name: str) -> StreamingData:
    import dataclasses

    from bnas_tf.data.pipeline import decoded_arrays

    if stats is None:
        stats = standard_stats(name)
    if stats is None:
        sample = data.train.take(np.arange(min(STATS_SAMPLE, len(data.train))))
        mean, std = channel_stats(
            decoded_arrays(sample, data.image_size, data.channels, batch=64, as_batches=True)
        )
    else:
        mean, std = parse_stats(stats, data.channels)
    return dataclasses.replace(data, mean=mean, std=std)
