"""Image-classification datasets for architecture search and training.

`load(name, data_dir)` returns one of two dataset descriptions:

* `ImageData`: uint8 arrays in memory, for the small standard datasets, read
  from the layouts users already have (downloaded the way Keras does when
  missing): CIFAR-10/100 (`cifar-10-batches-py/`, `cifar-100-python/`),
  (Fashion-)MNIST (IDX files, or Keras' `mnist.npz`) and "synthetic".
* `StreamingData`: a file list (an image folder `DIR/{train,test}/<class>/*`)
  or the records of a prepared TensorFlow Datasets dataset ("tfds:NAME").
  Nothing is decoded at load time; tf.data reads, decodes (in parallel),
  resizes/crops and prefetches images while the epoch runs, so memory does
  not grow with the number of images (only the file list does, about 100
  bytes per image).

`make_dataset` turns either into batches for `fit`/`evaluate`; `search_pairs`
yields the `((x_train, y_train), (x_val, y_val))` pairs of a bilevel
(DARTS-style) search from two disjoint halves of the training data; `holdout`
splits a stratified validation set off the training data (default 10 % of
each class), so that model selection never looks at the test split.

Module layout (one job each):
    core           ImageData, StreamingData
    sources        load, the CIFAR/MNIST loaders, synthetic
    download       locating and downloading the official layouts
    folder         image folders, streamed or in memory
    tfds_source    TensorFlow Datasets (optional dependency)
    splits         limit subsets, holdout
    normalization  standard statistics, normalize
    transforms     decoding, resizing, crops, flips (graph code)
    pipeline       make_dataset, search_pairs
    checks         every check of user- or file-controlled input

Bad input is reported as a `bnas_tf.errors.DataError` that names the problem
and the fix: fewer than 2 classes; too few images per class for a holdout;
labels outside `[0, num_classes)` (with a hint for 1-based labels); NaN or
infinite pixels (the indices of the images); undecodable files (their paths).

Unreadable image files. Decoding a million files at load time is too slow,
so checks come in tiers:

1. At load time (`verify="header"`, the default), every file gets a cheap
   structural check that reads only its header and its last bytes: non-empty,
   a known signature (JPEG, PNG, GIF, BMP), a header that parses and gives the
   image size (JPEG: markers up to the start of scan; PNG: IHDR), and the end
   marker where the format has one (JPEG `FFD9`, PNG `IEND`, GIF `;`). Only
   files that fail are decoded, and only those TensorFlow cannot decode are
   bad, so a legal oddity (bytes after a JPEG's end marker) costs one decode,
   not a false alarm. Bad files raise a DataError listing every path and the
   reason, or with `bad_files="skip"` are left out with a warning listing
   them. `verify="decode"` decodes every file instead (thorough, slow);
   `verify="none"` only lists files.
2. During the epoch, a file that still fails (corrupt entropy-coded data, or
   changed since loading) is named too: the pipeline drops the failed element,
   notices the gap in the (stateless, recomputable) epoch order and fails with
   `bnas_tf.data: could not read or decode 1 image file(s) in DIR during the
   epoch: PATH ...` instead of TensorFlow's anonymous `jpeg::Uncompress
   failed` (with `bad_files="skip"` it prints a warning and goes on).

Distribution: a streamed dataset given to `fit` under a strategy works as
any dataset (one machine: batches split over the replicas; several machines:
tf.data shards by element, so each worker reads every file). To have each
worker read only its share of the files, build it per input pipeline:

    ds = strategy.distribute_datasets_from_function(
        lambda ctx: make_dataset(data, batch_size=256, training=True,
                                 input_context=ctx).repeat())
    model.fit(ds, epochs=90, steps_per_epoch=len(data.y_train) // 256)

Example:
    >>> import bnas_tf
    >>> data = bnas_tf.data.load("synthetic", limit=100)
    >>> data.x_train.shape, data.x_test.shape
    ((100, 32, 32, 3), (20, 32, 32, 3))
    >>> train, val = bnas_tf.data.holdout(data, 0.1, seed=0)
    >>> ds = bnas_tf.data.search_pairs(train, batch_size=10)
    >>> val_ds = bnas_tf.data.make_dataset(val, batch_size=10)
"""

from __future__ import annotations

from bnas_tf.data.checks import BAD_FILE_POLICIES, VERIFY_MODES
from bnas_tf.data.core import ImageData, StreamingData
from bnas_tf.data.folder import IMAGE_EXTENSIONS, load_image_folder, stream_image_folder
from bnas_tf.data.normalization import STANDARD_STATS, channel_stats, normalize
from bnas_tf.data.pipeline import make_dataset, search_pairs
from bnas_tf.data.sources import (
    CIFAR10_CLASSES,
    DATASET_NAMES,
    FASHION_MNIST_CLASSES,
    MNIST_CLASSES,
    load,
    load_cifar10,
    load_cifar100,
    load_fashion_mnist,
    load_mnist,
    synthetic,
)
from bnas_tf.data.splits import DEFAULT_HOLDOUT_FRACTION, holdout
from bnas_tf.data.transforms import PREPROCESSING_STYLES


def load_tfds(*args, **kwargs) -> StreamingData:
    """`bnas_tf.data.tfds_source.load_tfds` (imported on use: tensorflow-datasets is optional)."""
    from bnas_tf.data.tfds_source import load_tfds as _load_tfds

    return _load_tfds(*args, **kwargs)


__all__ = [
    "BAD_FILE_POLICIES",
    "CIFAR10_CLASSES",
    "DATASET_NAMES",
    "DEFAULT_HOLDOUT_FRACTION",
    "FASHION_MNIST_CLASSES",
    "IMAGE_EXTENSIONS",
    "MNIST_CLASSES",
    "PREPROCESSING_STYLES",
    "STANDARD_STATS",
    "VERIFY_MODES",
    "ImageData",
    "StreamingData",
    "channel_stats",
    "holdout",
    "load",
    "load_cifar10",
    "load_cifar100",
    "load_fashion_mnist",
    "load_image_folder",
    "load_mnist",
    "load_tfds",
    "make_dataset",
    "normalize",
    "search_pairs",
    "stream_image_folder",
    "synthetic",
]
