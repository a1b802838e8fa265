"""The settings of an export: a checkpoint written as one ONNX or TorchScript file, checked
against PyTorch's descriptors."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..settings import DATA, RESTORED, check, flag_name, redeclared, setting
from .common import CommonConfig, absolute, ckpt_setting, parse_image_size, resume_setting

FORMATS = ("onnx", "torchscript")
SUFFIXES = {"onnx": (".onnx",), "torchscript": (".pt", ".pth", ".torchscript", ".ts")}
# the ONNX opsets written: torch's torch.export-based exporter writes 18 and newer (asked for
# less, it silently writes 18); up to what the onnxruntime this project pins runs
OPSETS = (18, 19, 20, 21, 22, 23)
EXPORT = "export"  # the help group of its own flags


@dataclass(frozen=True)
class ExportConfig:
    resume: Path | None = resume_setting("the checkpoint file or run folder to export")
    ckpt: str = ckpt_setting()
    format: str = setting("onnx", "the file's format", group=EXPORT, choices=FORMATS)
    out: Path | None = setting(None, "the file to write (.onnx; TorchScript: .pt)",
                               group=EXPORT, metavar="FILE")
    opset: int | None = setting(None, f"ONNX opset ({OPSETS[0]} to {OPSETS[-1]})", group=EXPORT,
                                parse=int, only_with={"format": "onnx"},
                                shown_default=str(OPSETS[0]))
    tolerance: float | None = setting(
        None, "the largest absolute difference allowed between the file's descriptors and "
        "PyTorch's", group=EXPORT, parse=float, positive=True, metavar="T",
        shown_default="1e-4 for float32 weights, 5e-3 for float16 ones")
    image_size: tuple[int, int] | None = redeclared(
        CommonConfig, "image_size", help="the images' HxW the file is made and checked at",
        roles=frozenset({RESTORED}), shown_default="the run's, else a released model's, else "
        "--data-root's images'")
    data_root: Path | None = redeclared(
        CommonConfig, "data_root", default=None, roles=frozenset(),
        help="check on a few of this dataset's images (either layout)",
        shown_default="generated images")
    dataset: str | None = redeclared(CommonConfig, "dataset", roles=frozenset())
    split: str = setting("val", "the split of --data-root whose images check", group=DATA)

    def validate(self) -> ExportConfig:
        """A resolved copy (absolute paths, the image size as (H, W)); `UserError` for what
        cannot be exported as asked."""
        for name in ("resume", "out"):
            if getattr(self, name) is None:
                raise UserError(f"export needs {flag_name(type(self), name)}; pass it")
        resolved = dataclasses.replace(
            self, resume=absolute(self.resume), out=absolute(self.out),
            data_root=absolute(self.data_root), image_size=parse_image_size(self.image_size))
        check(resolved)
        if resolved.format == "onnx" and resolved.opset is None:
            resolved = dataclasses.replace(resolved, opset=OPSETS[0])
        if resolved.format == "onnx" and resolved.opset not in OPSETS:
            raise UserError(f"--opset {resolved.opset} is not supported: the exporter writes "
                            f"opsets {OPSETS[0]} to {OPSETS[-1]}; pass one of those")
        if resolved.out.suffix.lower() not in SUFFIXES[resolved.format]:
            raise UserError(f"--out {resolved.out} does not end in "
                            f"{' or '.join(SUFFIXES[resolved.format])} for --format "
                            f"{resolved.format}; name the file so")
        if resolved.out.is_dir():
            raise UserError(f"--out {resolved.out} is a folder; pass a file name")
        return resolved
