"""The one image path: image files (or their decoded store) -> normalised batches on the device.

Clustering, descriptor-cache refreshes, training batches and evaluation all read images here.
Loader threads hand over compact data, never float images:

- uint8 pixels from the decoded store (`vpr_core.data.image_store`), when one fits its budget;
- else, on CUDA, the files' encoded JPEG bytes, decoded on the GPU in batches (nvJPEG through
  `torchvision.io.decode_jpeg`); other formats, and JPEGs the GPU decoder refuses, are decoded
  on the CPU;
- else uint8 pixels decoded on the CPU (PIL, as the reference).

`ToTensor` + ImageNet normalisation then run on the device, one batch at a time, in the same
order of operations as torchvision's, so CPU results stay bit-identical to the reference's.
Threads rather than processes load: PIL and file reads release the GIL, and nothing has to be
pickled or copied between processes.
"""
from __future__ import annotations

import logging
import re
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .. import runtime
from ..errors import UserError
from ..runtime import progress, to_device
from . import Split
from .image_store import ImageStore
from .images import IMAGENET_MEAN, IMAGENET_STD, UnreadableImage, decode_file

DECODE_CHOICES = ("auto", "cpu", "gpu")
DEFAULT_STORE_GB = 8.0  # the decoded store's budget when images are decoded on the CPU
JPEG_MAGIC = b"\xff\xd8"
# What torchvision's decode_jpeg says (always as a RuntimeError) when a file is the problem, from
# torchvision/csrc/io/image/. nvJPEG (CUDA) wraps every failure as 'Error while decoding JPEG
# images: <what>': a chroma subsampling it cannot take (CMYK...), or a step reading the file that
# returned nvjpegStatus_t 3 (bad JPEG), 4 (JPEG not supported), 9 (not supported) or 10
# (incomplete bitstream); 5 (allocator failure), CUDA faults and out of memory are not the file's.
# On the CPU, libjpeg's own messages (jerror.h) name the damage ('Insufficient memory' is not one).
DECODER_REFUSALS = re.compile(
    r"Unknown chroma subsampling"
    r"|(Failed to get image info|Failed to parse jpeg stream|Failed to decode batch"
    r"|Failed to decode jpeg stream|Failed to transfer jpeg to device): (3|4|9|10)\b"
    r"|Image is incomplete or truncated|Not a JPEG file|JPEG file structure|Unsupported JPEG"
    r"|Corrupt JPEG|Bogus|Premature end|table 0x[0-9a-f]+ was not defined|Unsupported marker"
    r"|Unsupported color conversion|Invalid component ID|Invalid progressive|Sampling factors"
    r"|Maximum supported image dimension|Image too wide|Empty JPEG image|contains no image"
    r"|not implemented yet|arithmetic coding", re.IGNORECASE)
log = logging.getLogger(__name__)
_thread_state = threading.local()  # a loader thread's CUDA stream for decoding


def decodes_on_gpu(decode: str, device: torch.device) -> bool:
    """Whether JPEGs are decoded on the device: 'auto' does so on CUDA."""
    if decode not in DECODE_CHOICES:
        raise UserError(f"--decode {decode!r} must be one of {', '.join(DECODE_CHOICES)}")
    if decode == "gpu" and device.type != "cuda":
        raise UserError(f"--decode gpu needs a CUDA device, and the device is {device}; pass "
                        f"--decode cpu or auto")
    return decode == "gpu" or (decode == "auto" and device.type == "cuda")


def refused_by_decoder(error: BaseException) -> bool:
    """Whether `error`, raised by torchvision's decode_jpeg, says that a file is one it does
    not decode (damaged, or of a kind it does not take), rather than that the device ran out
    of memory or failed."""
    if not isinstance(error, RuntimeError) or isinstance(error, torch.OutOfMemoryError):
        return False
    return DECODER_REFUSALS.search(str(error)) is not None


def store_budget_bytes(store_gb: float | None, gpu_decode: bool) -> int:
    """The decoded store's budget: `store_gb`, else 8 GB when decoding on the CPU, and none
    when the GPU decodes (nvJPEG outruns reading the decoded pixels back)."""
    if store_gb is None:
        store_gb = 0.0 if gpu_decode else DEFAULT_STORE_GB
    return int(float(store_gb) * 1e9)


class ImageFeed:
    """The images of one split at one size (H, W), as float32 batches [G, 3, H, W] on `device`.

    An index is a position in `split.all_paths`: database image i is i, query q is
    `split.num_database + q`. Batches come in `memory_format` (default: channels-last on
    CUDA, NCHW elsewhere; see `runtime.memory_format`), ImageNet-normalised, or with
    `normalise` False as pixels in [0, 1] (for an exported file, which normalises itself).
    """

    def __init__(self, split: Split, size: tuple[int, int], device: torch.device, *,
                 workers: int = 0, gpu_decode: bool = False, store_budget: int = 0,
                 cache_dir: Path | None = None, show_progress: bool = False,
                 memory_format: torch.memory_format | None = None, normalise: bool = True):
        self.split, self.size, self.device = split, tuple(size), device
        self.normalise = normalise
        self.paths = split.all_paths
        self.workers = workers
        self.gpu_decode = gpu_decode
        self.store_budget = store_budget if cache_dir is not None else 0
        self.cache_dir = cache_dir
        self.show_progress = show_progress
        self.memory_format = memory_format or runtime.memory_format(device, "fp32")
        self.mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
        self._store: ImageStore | None = None
        self._store_checked = False
        self._warned = False

    @classmethod
    def for_config(cls, config, split: Split, size: tuple[int, int],
                   device: torch.device, normalise: bool = True) -> ImageFeed:
        """The feed a stage's config asks for (`workers`, `decode`, `image_store_gb`,
        `precision`)."""
        gpu = decodes_on_gpu(config.decode, device)
        return cls(split, size, device, workers=config.workers, gpu_decode=gpu,
                   store_budget=store_budget_bytes(config.image_store_gb, gpu),
                   cache_dir=config.cache_dir, show_progress=config.show_progress,
                   memory_format=runtime.memory_format(device, config.precision),
                   normalise=normalise)

    def query_index(self, query: int) -> int:
        return self.split.num_database + int(query)

    # ---- batches -------------------------------------------------------------------------
    def batches(self, groups: Iterable[Sequence[int]]) -> Iterator[torch.Tensor]:
        """For each group of indices, its images normalised on the device, in order.

        Loading (and GPU decoding) runs ahead of the consumer by a few groups, on `workers`
        threads, so the thread that launches the model's work never waits for images.
        """
        if self.store() is not None:
            load = self._read_store
        elif self.gpu_decode:
            load = self._decode_encoded
        else:
            load = self._decode_on_cpu
        for images in _ahead(groups, load, self.workers):
            yield self._normalise(self._on_device(images))

    def _on_device(self, images) -> torch.Tensor:
        """uint8 [G, 3, H, W] on the device from what a loader handed over: one uint8 batch
        [G, H, W, 3] on the host, or a list of (layout, image): "hwc" [H, W, 3] pixels on
        the host, or "chw" [3, h, w] decoded by torchvision (on the device when it is CUDA)."""
        if isinstance(images, torch.Tensor):
            return images.to(self.device, non_blocking=True).permute(0, 3, 1, 2)
        on_device = []
        for layout, image in images:
            if layout == "hwc":
                on_device.append(to_device(image, self.device).permute(2, 0, 1))
                continue
            if image.device.type == "cuda":
                # decoded on a loader thread's stream: keep its memory from being handed to
                # the next decode until this stream has read it
                image.record_stream(torch.cuda.current_stream(image.device))
            on_device.append(self._resized(image))
        return torch.stack(on_device)

    def _normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 [G, 3, H, W] -> float32, ToTensor's /255 then (x - mean) / std."""
        pixels = pixels.contiguous(memory_format=self.memory_format)
        if not self.normalise:
            return pixels.float().div_(255)
        return pixels.float().div_(255).sub_(self.mean).div_(self.std)

    # ---- loading (on loader threads) -------------------------------------------------------
    def _read_store(self, group: Sequence[int]) -> torch.Tensor:
        return self._pinned(self._store.read(group))

    def _decode_on_cpu(self, group: Sequence[int]) -> torch.Tensor:
        return self._pinned(self._decode_pixels(group))

    def _decode_pixels(self, group: Sequence[int]) -> np.ndarray:
        """uint8 [G, H, W, 3], decoded and resized on the CPU."""
        return np.stack([decode_file(self.paths[i], self.size) for i in group])

    def _pinned(self, pixels: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(pixels)
        return tensor.pin_memory() if self.device.type == "cuda" else tensor

    def _decode_encoded(self, group: Sequence[int]) -> list:
        """The group's JPEGs decoded by torchvision on the device ("chw", [3, h, w]); other
        formats, and JPEGs that decoder refuses (CMYK, damaged...), by PIL ("hwc")."""
        images, encoded = [], {}
        for k, i in enumerate(group):
            data = Path(self.paths[i]).read_bytes()
            if data[:2] == JPEG_MAGIC:
                encoded[k] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
                images.append(None)
            else:
                images.append(("hwc", torch.from_numpy(decode_file(self.paths[i], self.size))))
        if encoded:
            try:
                decoded = [("chw", image) for image in self._decode_jpegs(list(encoded.values()))]
            except RuntimeError as error:
                if not refused_by_decoder(error):
                    raise  # out of memory, a CUDA fault: retrying on the CPU would hide it
                self._warn_once(f"JPEG decoding on {self.device} failed "
                                f"({str(error).splitlines()[0]}); decoding such images on "
                                f"the CPU")
                decoded = [("hwc", self._decode_bytes(data, group[k]))
                           for k, data in encoded.items()]
            for k, image in zip(encoded, decoded):
                images[k] = image
        return images

    def _decode_jpegs(self, encoded: list) -> list:
        """torchvision's batched decoder; on CUDA (nvJPEG) on this thread's own stream.

        nvJPEG writes its output on a stream of its own, and torchvision takes that memory
        from the calling stream's pool: on the compute stream, memory still queued for reading
        there could be overwritten. A stream per loader thread keeps the pools apart.
        """
        from torchvision.io import ImageReadMode, decode_jpeg

        if self.device.type != "cuda":
            return decode_jpeg(encoded, mode=ImageReadMode.RGB, device=self.device)
        local = _thread_state.__dict__
        if "stream" not in local:
            local["stream"] = torch.cuda.Stream(self.device)
        with torch.cuda.stream(local["stream"]):
            return decode_jpeg(encoded, mode=ImageReadMode.RGB, device=self.device)

    def _decode_bytes(self, data: torch.Tensor, index: int) -> torch.Tensor:
        """uint8 [H, W, 3] on the host, decoded by PIL from a file's bytes."""
        import io

        try:
            return torch.from_numpy(decode_file(io.BytesIO(data.numpy().tobytes()), self.size))
        except UnreadableImage:
            raise UnreadableImage(self.paths[index]) from None

    def _resized(self, image: torch.Tensor) -> torch.Tensor:
        """uint8 [3, h, w] -> [3, H, W] on the device: antialiased bilinear, as PIL resizes."""
        image = image.to(self.device)
        if tuple(image.shape[1:]) == self.size:
            return image
        resized = F.interpolate(image[None].float(), size=self.size, mode="bilinear",
                                antialias=True, align_corners=False)
        return resized[0].round_().clamp_(0, 255).to(torch.uint8)

    def _warn_once(self, message: str) -> None:
        if not self._warned:
            log.warning(message)
            self._warned = True

    # ---- the decoded store ----------------------------------------------------------------
    def store(self) -> ImageStore | None:
        """The split's decoded store (built on first use), or None when it is off."""
        if not self._store_checked:
            self._store_checked = True
            if self.store_budget > 0:
                self._store = ImageStore.open_or_build(self.split, self.size, self.cache_dir,
                                                       self.store_budget, self._fill_store)
        return self._store

    def _fill_store(self, out: np.ndarray) -> None:
        """Decode every image of the split into `out` [N, H, W, 3] (on the CPU)."""
        groups = chunks(range(len(self.paths)), 64)
        bar = progress(total=len(self.paths), enabled=self.show_progress,
                       desc=f"image store {self.split.split}", unit="img")
        for group, pixels in _ahead(groups, lambda g: (g, self._decode_pixels(g)),
                                    self.workers):
            out[group[0]:group[-1] + 1] = pixels
            bar.update(len(group))
        bar.close()


def chunks(indices: Sequence[int], size: int) -> list[np.ndarray]:
    """`indices` cut into consecutive groups of at most `size`."""
    indices = np.asarray(indices, dtype=np.int64)
    return [indices[i:i + size] for i in range(0, len(indices), size)]


def _ahead(groups: Iterable, load: Callable, workers: int) -> Iterator:
    """`load(group)` for each group, in order, computed up to 2 * `workers` groups ahead on
    `workers` threads (in the calling thread when 0)."""
    if workers <= 0:
        for group in groups:
            yield load(group)
        return
    pending: deque = deque()
    remaining = iter(groups)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="images") as pool:
        try:
            pending.extend(pool.submit(load, g) for g in islice(remaining, 2 * workers))
            while pending:
                result = pending.popleft().result()
                pending.extend(pool.submit(load, g) for g in islice(remaining, 1))
                yield result
        finally:
            for future in pending:
                future.cancel()
