"""Per-image graph functions: decoding, resizing, cropping and augmentation.

Two preprocessing styles, each a training transform (random) and an
evaluation transform (deterministic), both mapping one decoded uint8 image
`(height, width, channels)` to float32 pixels in [0, 255] of the target size:

* "cifar": resize to the target size when it differs; for training, pad by
  `CROP_PADDING` (4) zero pixels and crop back at a random offset, then flip
  horizontally with probability 1/2 (RGB images only; gray images, MNIST-like,
  are only cropped).
* "imagenet": for training, a random-resized crop (a box covering 8-100 % of
  the image area with aspect ratio 3/4-4/3, as in Inception/ResNet training)
  resized to the target size, then the same flip; for evaluation, resize so the
  image covers the target size divided by `CENTER_CROP_FRACTION` (0.875: 256
  for 224) and take the central crop.

Randomness is stateless: each image gets its own seeds, so a pipeline is
reproducible for a seed and still draws new crops every epoch.
"""

from __future__ import annotations

import tensorflow as tf

PREPROCESSING_STYLES = ("cifar", "imagenet")
"""Names of the preprocessing styles (see the module docstring)."""

CROP_PADDING = 4
CENTER_CROP_FRACTION = 0.875
RESIZED_CROP_AREA = (0.08, 1.0)
RESIZED_CROP_ASPECT = (3 / 4, 4 / 3)


def decode(contents: tf.Tensor, channels: int) -> tf.Tensor:
    """Decode any supported image; JPEGs with the accurate IDCT, as PIL/libjpeg do by default."""
    return tf.cond(
        tf.io.is_jpeg(contents),
        lambda: tf.io.decode_jpeg(contents, channels=channels, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(contents, channels=channels, expand_animations=False),
    )


def resize(image: tf.Tensor, size: tuple[int, int] | None) -> tf.Tensor:
    """float32 pixels resized (bilinear) to `size`; unchanged when None or already that size."""
    image = tf.cast(image, tf.float32)
    if size is None:
        return image
    same = tf.reduce_all(tf.equal(tf.shape(image)[:2], size))
    image = tf.cond(same, lambda: image, lambda: tf.image.resize(image, size))
    return tf.ensure_shape(image, (*size, None))


def pad_crop(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Random crop of the image zero-padded by `CROP_PADDING` pixels on each side."""
    p = CROP_PADDING
    padded = tf.pad(image, [[p, p], [p, p], [0, 0]])
    return tf.image.stateless_random_crop(padded, tf.shape(image), seed=seed)


def random_resized_crop(image: tf.Tensor, size: tuple[int, int], seed: tf.Tensor) -> tf.Tensor:
    """A random box (8-100 % of the area, aspect 3/4-4/3) resized to `size`, float32."""
    begin, box, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image),
        bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], shape=(1, 1, 4)),
        seed=seed,
        min_object_covered=0.1,
        aspect_ratio_range=RESIZED_CROP_ASPECT,
        area_range=RESIZED_CROP_AREA,
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    return resize(tf.slice(image, begin, box), size)


def center_crop(image: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """Resize so the image covers `size / CENTER_CROP_FRACTION`, then crop its center."""
    height, width = size
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = tf.maximum(height / shape[0], width / shape[1]) / CENTER_CROP_FRACTION
    scaled = tf.cast(tf.math.ceil(shape * scale), tf.int32)
    image = tf.image.resize(tf.cast(image, tf.float32), scaled)
    top = (scaled[0] - height) // 2
    left = (scaled[1] - width) // 2
    return tf.slice(image, [top, left, 0], [height, width, -1])


def transform(
    image: tf.Tensor,
    seeds: tf.Tensor | None,
    *,
    style: str,
    size: tuple[int, int] | None,
    training: bool,
    flip: bool,
) -> tf.Tensor:
    """Preprocess one decoded image (see the module docstring); float32 pixels in [0, 255].

    Args:
        image: uint8 or float `(height, width, channels)`.
        seeds: int64 `(2, 2)`: one stateless seed for the crop, one for the
            flip. Needed only when `training`.
        style: "cifar" or "imagenet".
        size: `(height, width)` of the output; None keeps the size ("cifar").
        training: random crop and flip (else the deterministic evaluation crop).
        flip: random horizontal flips when training.
    """
    if style == "imagenet":
        if training:
            image = random_resized_crop(image, size, seeds[0])
        else:
            image = center_crop(image, size)
    else:
        image = resize(image, size)
        if training:
            image = pad_crop(image, seeds[0])
    if training and flip:
        image = tf.image.stateless_random_flip_left_right(image, seed=seeds[1])
    if size is not None:
        image = tf.ensure_shape(image, (*size, None))
    return image
