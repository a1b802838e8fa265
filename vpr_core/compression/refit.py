"""Refitting a conv whose input channels were pruned, so that its output stays the original's.

Removing filters from one conv takes input channels away from the next, whose output then
drifts from what the layers after it (and NetVLAD's clusters) were trained on. The next conv's
remaining weights and bias are refitted by ridge least squares: on calibration images, its
output in the pruned model (from the pruned model's activations) should match the same conv's
output in the original model. For each output channel that is a linear problem over the
kernel's input patch, solved from its normal equations summed over sampled output positions.
The ridge pulls the fit towards the sliced weights where the samples say little (at the low
resolution of the last convs there are fewer samples than unknowns).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SAMPLES_PER_IMAGE = 256  # output positions drawn per calibration image
RIDGE = 1e-3  # times the mean of the normal matrix's diagonal (1e-4 to 1e-1 measured: README)


class Refitter:
    """`refit(index)` for the convs of a pruned encoder, in order, each against the same conv
    of the original, on calibration `batches` of images [N, 3, H, W] on the encoders' device.

    Both encoders' activations at the depth of the last refit are kept per batch, so that each
    image goes through each layer once, not once per conv refitted (the caller sizes
    `batches` to the memory this takes, see `activation_bytes`).
    """

    def __init__(self, pruned: nn.Sequential, original: nn.Sequential,
                 batches: list[torch.Tensor], generator: torch.Generator):
        self.pruned, self.original, self.generator = pruned, original, generator
        self.depth = 0  # the kept activations are the input of layer `depth`
        self.pruned_inputs, self.original_inputs = list(batches), list(batches)

    @torch.no_grad()
    def __call__(self, index: int) -> None:
        """Refit `pruned[index]` (a conv, in place), the layers before it being final."""
        if index < self.depth:
            raise ValueError(f"convs are refitted in order: {index} comes before {self.depth}")
        # each slice starts at a conv, so no in-place ReLU touches the kept tensors
        self.pruned_inputs = [self.pruned[self.depth:index](x) for x in self.pruned_inputs]
        self.original_inputs = [self.original[self.depth:index](x)
                                for x in self.original_inputs]
        self.depth = index
        conv, gram, cross = self.pruned[index], None, None
        for inputs, original_inputs in zip(self.pruned_inputs, self.original_inputs):
            target = self.original[index](original_inputs)
            at = _positions(target.shape, self.generator, target.device)  # (image, row, col)
            patches = _patches(inputs, conv, *at)  # [S, Cin * kh * kw (+ 1)]
            outputs = target.permute(0, 2, 3, 1)[at].double()  # [S, Cout]
            gram = patches.T @ patches if gram is None else gram + patches.T @ patches
            cross = patches.T @ outputs if cross is None else cross + patches.T @ outputs
        if gram is not None:
            _solve(conv, gram, cross)


def activation_bytes(encoder: nn.Sequential, image: torch.Tensor) -> int:
    """The bytes a `Refitter` keeps per calibration image at most: both encoders' largest
    activation for one `image` [1, 3, H, W]."""
    largest = image.numel()
    with torch.no_grad():
        x = image
        for layer in encoder:
            x = layer(x)
            largest = max(largest, x.numel())
    return 2 * largest * image.element_size()


def _solve(conv: nn.Conv2d, gram: torch.Tensor, cross: torch.Tensor) -> None:
    """Set the conv's weights (and bias) to the ridge least-squares solution of the summed
    normal equations: min |outputs - patches @ w|^2 + ridge |w - current|^2, for all output
    channels at once."""
    current = conv.weight.flatten(1)
    if conv.bias is not None:
        current = torch.cat([current, conv.bias[:, None]], dim=1)
    current = current.T.double()  # [Cin * kh * kw (+ 1), Cout]
    ridge = RIDGE * gram.diagonal().mean().clamp_min(1e-12)
    eye = torch.eye(len(gram), dtype=gram.dtype, device=gram.device)
    solution = torch.linalg.solve(gram + ridge * eye, cross + ridge * current)
    weights = conv.weight.numel() // conv.out_channels
    conv.weight.copy_(solution[:weights].T.reshape(conv.weight.shape))
    if conv.bias is not None:
        conv.bias.copy_(solution[weights])


def _positions(shape: torch.Size, generator: torch.Generator, device: torch.device
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Up to SAMPLES_PER_IMAGE random output positions per image of an output `shape`
    [N, C, H', W']: (image, row, column) indices, each of length S."""
    count, _, height, width = shape
    per_image = min(SAMPLES_PER_IMAGE, height * width)
    flat = torch.stack([torch.randperm(height * width, generator=generator)[:per_image]
                        for _ in range(count)]).flatten()  # [N * per_image]
    images = torch.arange(count).repeat_interleave(per_image)
    return images.to(device), (flat // width).to(device), (flat % width).to(device)


def _patches(inputs: torch.Tensor, conv: nn.Conv2d, images: torch.Tensor,
             out_rows: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """The conv's input patch at each sampled output position, flattened as its weight is
    ([Cin, kh, kw]), with a trailing 1 when it has a bias: [S, Cin * kh * kw (+ 1)] float64."""
    (kh, kw), (sh, sw), (dh, dw) = conv.kernel_size, conv.stride, conv.dilation
    ph, pw = conv.padding
    padded = F.pad(inputs, (pw, pw, ph, ph)).permute(0, 2, 3, 1)  # [N, H + 2p, W + 2p, Cin]
    ys = out_rows[:, None] * sh + torch.arange(kh, device=inputs.device) * dh  # [S, kh]
    xs = columns[:, None] * sw + torch.arange(kw, device=inputs.device) * dw  # [S, kw]
    patch = padded[images[:, None, None], ys[:, :, None], xs[:, None, :]]  # [S, kh, kw, Cin]
    patch = patch.permute(0, 3, 1, 2).flatten(1).double()
    if conv.bias is None:
        return patch
    return torch.cat([patch, torch.ones(len(patch), 1, dtype=patch.dtype,
                                        device=patch.device)], dim=1)

