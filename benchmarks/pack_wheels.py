"""`python benchmarks/pack_wheels.py`: the wheels a GPU sweep needs on the device machine, in
folders small enough for one device call each.

The device machine (Python 3.12, x86-64) has torch, torchvision, pandas, pyarrow, grpcio and
the rest of `benchmarks/device_packages.txt`, but not Ray Tune, MLflow, Optuna or faiss, and
it reaches no package index. This resolves what `python -m orchestrator sweep` imports (Ray
Tune, MLflow's client with its SQLite store, Optuna, faiss) for that Python and platform,
downloads the wheels the machine lacks (one version of each) and deals them into
`.whl/part1`, `.whl/part2`, ... of at most `--part-mib` MiB each; a wheel larger than that
(Ray's, about 76 MiB) is cut into byte chunks `NAME.whl.00`, `NAME.whl.01`, ... that
`benchmarks/device_sweep.sh` joins again. Every part holds `SHA256SUMS` (of the whole wheels)
and `PARTS` (how many parts there are). `.whl/` is ignored by git.

    python benchmarks/pack_wheels.py              # then see benchmarks/device_sweep.sh

MLflow: the project imports only `MlflowClient`, `mlflow.entities` and `mlflow.exceptions`
against a SQLite store, which `mlflow-skinny` (plus SQLAlchemy and Alembic) serves; the full
`mlflow` package would add its server, UI and their dependencies.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REQUIREMENTS = ("ray[tune]==2.60.0", "mlflow-skinny==3.17.2", "sqlalchemy>=2", "alembic",
                "optuna==5.1.0", "faiss-cpu==1.15.1")
# the device machine's interpreter and platform
TARGET = ("--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp",
          "--abi", "cp312", "--platform", "manylinux_2_28_x86_64", "--platform",
          "manylinux_2_27_x86_64", "--platform", "manylinux_2_17_x86_64", "--platform",
          "manylinux2014_x86_64", "--platform", "manylinux1_x86_64")
MIB = 2**20


def normalised(name: str) -> str:
    """A distribution name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def present_on_device(path: Path = HERE / "device_packages.txt") -> set[str]:
    lines = (line.strip() for line in path.read_text().splitlines())
    return {normalised(line) for line in lines if line and not line.startswith("#")}


def resolve(requirements: list[str], scratch: Path) -> list[tuple[str, str]]:
    """(name, version) of every distribution `requirements` need on the device's Python, as
    pip resolves them (metadata only, nothing installed)."""
    report = scratch / "report.json"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--dry-run",
                    "--ignore-installed", "--report", str(report), *TARGET,
                    "--target", str(scratch / "unused"), *requirements], check=True)
    installs = json.loads(report.read_text())["install"]
    return [(item["metadata"]["name"], item["metadata"]["version"]) for item in installs]


def download(pins: list[str], folder: Path) -> list[Path]:
    """The wheels of `pins` (NAME==VERSION) for the device, without their dependencies."""
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", *TARGET,
                    "--dest", str(folder), *pins], check=True)
    return sorted(folder.glob("*.whl"))


def pieces(wheels: list[Path], limit: int) -> list[tuple[Path, int, int, str]]:
    """(wheel, offset, size, file name) of every piece: a wheel whole, or one over `limit`
    bytes in chunks of `limit` named NAME.whl.00, NAME.whl.01, ..."""
    found = []
    for wheel in wheels:
        size = wheel.stat().st_size
        if size <= limit:
            found.append((wheel, 0, size, wheel.name))
            continue
        for number, offset in enumerate(range(0, size, limit)):
            found.append((wheel, offset, min(limit, size - offset), f"{wheel.name}.{number:02d}"))
    return found


def deal(found: list, limit: int) -> list[list]:
    """The pieces in parts of at most `limit` bytes: largest first, each into the first part
    with room."""
    parts: list[list] = []
    for piece in sorted(found, key=lambda p: -p[2]):
        part = next((p for p in parts if sum(q[2] for q in p) + piece[2] <= limit), None)
        if part is None:
            part = []
            parts.append(part)
        part.append(piece)
    return parts


def write_parts(wheels: list[Path], out: Path, limit: int) -> list[Path]:
    """`.whl/partN/` folders of the wheels' pieces, each with SHA256SUMS and PARTS."""
    sums = "".join(f"{_sha256(w)}  {w.name}\n" for w in wheels)
    parts = deal(pieces(wheels, limit), limit)
    folders = []
    for number, part in enumerate(parts, start=1):
        folder = out / f"part{number}"
        folder.mkdir(parents=True)
        for wheel, offset, size, name in part:
            with open(wheel, "rb") as source, open(folder / name, "wb") as target:
                source.seek(offset)
                target.write(source.read(size))
        (folder / "SHA256SUMS").write_text(sums)
        (folder / "PARTS").write_text(f"{len(parts)}\n")
        folders.append(folder)
    return folders


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(MIB), b""):
            digest.update(block)
    return digest.hexdigest()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE.parent / ".whl")
    parser.add_argument("--part-mib", type=float, default=60.0,
                        help="largest part (a device call carries 64 MiB with the repository)")
    parser.add_argument("requirements", nargs="*", default=list(REQUIREMENTS))
    args = parser.parse_args(argv)
    limit = int(args.part_mib * MIB)
    present = present_on_device()
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        needed = [(n, v) for n, v in resolve(args.requirements, scratch)
                  if normalised(n) not in present]
        wheels = download([f"{n}=={v}" for n, v in needed], scratch / "wheels")
        shutil.rmtree(args.out, ignore_errors=True)
        folders = write_parts(wheels, args.out, limit)
    for folder in folders:
        size = sum(f.stat().st_size for f in folder.iterdir())
        print(f"{folder}: {len(list(folder.glob('*.whl*')))} files, {size / MIB:.1f} MiB")
    print(f"{len(wheels)} wheels the device lacks: " + ", ".join(f"{n} {v}" for n, v in needed))


if __name__ == "__main__":
    main()
