"""Image files: validation of headers up front, and decoding into uint8 pixels."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import UserError

# The reference's transform: ToTensor, then ImageNet normalisation.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def check_images(paths, what: str) -> set[tuple[int, int]]:
    """Check that every image exists, is non-empty and has a readable header.

    Returns the set of distinct (H, W) sizes. Raises `UserError` naming the first bad file.
    Only headers are read, so this costs a fraction of a millisecond per image.
    """
    paths = list(paths)
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(_probe, paths))
    for path, result in zip(paths, results):
        if isinstance(result, str):
            raise UserError(f"{what} image {path} {result}; restore the file or remove it from "
                            f"the dataset")
    return set(results)


def _probe(path: str):
    try:
        if os.path.getsize(path) == 0:
            return "is empty (0 bytes)"
        with Image.open(path) as image:
            width, height = image.size
        return (height, width)
    except FileNotFoundError:
        return "does not exist"
    except UnidentifiedImageError:
        return "is not an image"
    except OSError as error:
        return f"cannot be read ({error})"


def decode_file(source, size: tuple[int, int] | None) -> np.ndarray:
    """uint8 pixels [H, W, 3] of an image file (a path or a file object), RGB, resized to
    `size` (H, W) when given. Raises `UnreadableImage` when the file does not decode.

    This is the reference's image (PIL, bilinear resize in uint8) before `ToTensor` and
    `Normalize`, which happen on the device: see `vpr_core.data.image_feed`.
    """
    try:
        with Image.open(source) as image:
            image = image.convert("RGB")
            if size is not None and (image.height, image.width) != tuple(size):
                image = image.resize((size[1], size[0]), Image.BILINEAR)
            return np.array(image)  # writable: torch shares its memory
    except (OSError, ValueError, UnidentifiedImageError) as error:
        raise UnreadableImage(str(getattr(source, "name", source))) from error


class UnreadableImage(UserError):
    """An image file that does not decode."""

    def __init__(self, path: str):
        super().__init__(f"image {path} cannot be decoded; restore the file or remove it from "
                         f"the dataset")
