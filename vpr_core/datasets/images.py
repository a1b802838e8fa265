"""Image files: validation of headers up front and loading into normalised tensors."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision.transforms import functional as TF

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


def load_image(path: str, size: tuple[int, int] | None) -> torch.Tensor:
    """[3, H, W] float tensor, resized to `size` (H, W) when given, ImageNet-normalised."""
    with Image.open(path) as image:
        image = image.convert("RGB")
        if size is not None and (image.height, image.width) != tuple(size):
            image = image.resize((size[1], size[0]), Image.BILINEAR)
        tensor = TF.to_tensor(image)
    return TF.normalize(tensor, IMAGENET_MEAN, IMAGENET_STD)


class ImageList(Dataset):
    """Images by index, for caching descriptors. Item: (image [3, H, W], index, ok).

    A file that fails to decode gives `ok=False` and a zero image instead of an exception, so
    the error reaches the main process as data (a DataLoader worker's exception arrives wrapped
    in a traceback) and `raise_unreadable` turns it into one clear line.
    """

    def __init__(self, paths, size: tuple[int, int]):
        self.paths = list(paths)
        self.size = tuple(size)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        try:
            return load_image(self.paths[index], self.size), index, True
        except (OSError, ValueError, UnidentifiedImageError):
            return torch.zeros(3, *self.size), index, False


def raise_unreadable(paths, indices, ok) -> None:
    """Raise `UserError` for the first item of a batch whose image did not decode."""
    for index, good in zip(indices.tolist(), ok.tolist()):
        if not good:
            raise UserError(f"image {paths[index]} cannot be decoded; restore the file or "
                            f"remove it from the dataset")
