"""The `image_folder` dataset (one sub-folder per class) and reading image files into arrays."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from harness.config.schema import DataConfig
from harness.data.memory import check_memory, inputs_bytes
from harness.data.raw import RawData, resolve_data_path
from harness.data.registry import DATASETS
from harness.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
FOLDER_IMAGE_SIZE = (64, 64)
"""What image-folder images are resized to when data.image_size is not set (they differ in size)."""
RESIZE_CHUNK_BYTES = 64 * 2**20


@dataclass(frozen=True)
class ImageSpec:
    """How image files become arrays; saved with the model so predict reads files the same way."""

    size: tuple[int, int]
    color_mode: Literal["rgb", "grayscale"]

    @property
    def channels(self) -> int:
        return 3 if self.color_mode == "rgb" else 1

    def to_dict(self) -> dict[str, Any]:
        return {"size": list(self.size), "color_mode": self.color_mode}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImageSpec:
        height, width = (int(v) for v in data["size"])
        if data["color_mode"] not in ("rgb", "grayscale"):
            raise ValueError(f"color_mode must be rgb or grayscale. Received: {data['color_mode']!r}")
        return cls((height, width), data["color_mode"])


def list_images(folder: Path) -> list[Path]:
    """Image files under `folder` (recursively, hidden entries skipped), in a stable sorted order."""
    return sorted(
        path
        for path in folder.rglob("*")
        if path.is_file()
        and path.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    )


def read_images(paths: list[Path], spec: ImageSpec) -> np.ndarray:
    """Decode and resize `paths` into one float32 array of pixel values 0-255, (n, h, w, channels).

    Keras is imported here rather than at module level so that config checks and job submission,
    which import this package, do not pay TensorFlow's start-up time.
    """
    from keras.utils import img_to_array, load_img

    check_memory(
        inputs_bytes(len(paths), (*spec.size, spec.channels)),
        f"{len(paths)} {spec.color_mode} images resized to data.image_size={list(spec.size)}",
        "Lower data.image_size (every image is resized to it), or read fewer images.",
    )
    out = np.empty((len(paths), *spec.size, spec.channels), dtype=np.float32)
    for i, path in enumerate(paths):
        try:
            image = load_img(
                path, color_mode=spec.color_mode, target_size=spec.size, interpolation="bilinear"
            )
        except (OSError, ValueError) as err:
            raise DataError(f"image file {path} cannot be read as an image: {err}") from None
        out[i] = img_to_array(image, dtype="float32")
    return out


def resize_images(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Images (n, h, w) or (n, h, w, c) as float32 (n, *size, c), bilinear, in the input's units.

    Chunks of about 64 MiB go through `tf.image.resize` into one preallocated float32 array, so
    resizing a large NPZ never holds a float64 (or a second full float32) copy. Images already
    of `size` are returned unchanged (with a channel axis added to 3-D input). Bilinear weights
    sum to one, so resizing commutes with the per-channel scaling fitted afterwards.
    """
    images = x[..., None] if x.ndim == 3 else x
    if images.ndim != 4:
        raise DataError(f"images to resize must have shape (n, height, width[, channels]). Received: {x.shape}")
    if tuple(images.shape[1:3]) == tuple(size):
        return images
    import tensorflow as tf

    out = np.empty((len(images), *size, images.shape[-1]), dtype=np.float32)
    rows = max(1, RESIZE_CHUNK_BYTES // max(1, images[:1].size * 4))
    for start in range(0, len(images), rows):
        chunk = tf.convert_to_tensor(images[start : start + rows], dtype=tf.float32)
        out[start : start + rows] = tf.image.resize(chunk, size, method="bilinear").numpy()
    return out


@DATASETS.register("image_folder")
def load_image_folder(cfg: DataConfig, seed: int, base_dir: Path) -> RawData:
    """Every image under data.path/<class_name>/, resized to data.image_size; classes sorted by name."""
    root = resolve_data_path(cfg, base_dir, "image folder", folder=True)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise DataError(
            f"data.path must be a folder with one sub-folder of images per class, at least 2 classes. "
            f"Received: {root} with {len(classes)} class folder(s): {', '.join(classes) or 'none'}"
        )
    files = {name: list_images(root / name) for name in classes}
    empty = [name for name, paths in files.items() if not paths]
    if empty:
        raise DataError(
            f"every class folder of {root} must hold images ({', '.join(IMAGE_SUFFIXES)}). "
            f"Received: no images in {', '.join(repr(name) for name in empty)}"
        )
    spec = ImageSpec(cfg.image_size or FOLDER_IMAGE_SIZE, cfg.color_mode)
    paths = [path for name in classes for path in files[name]]
    counts = [len(files[name]) for name in classes]
    return RawData(
        source=f"image folder {root}",
        x=read_images(paths, spec),
        y=np.repeat(np.arange(len(classes)), counts),
        target_name="class",
        task="classification",
        class_names=classes,
        input_scale=1 / 255,
        image=spec,
        notes={
            "images_per_class": dict(zip(classes, counts, strict=True)),
            "image_size": list(spec.size),
            "color_mode": spec.color_mode,
        },
    )
