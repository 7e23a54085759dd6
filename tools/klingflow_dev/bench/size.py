"""Row: the layer every function loads, zipped as Lambda receives it, for both stack options.

Built the way `sam build` builds it for arm64: the layer's requirements.txt installed from
manylinux2014_aarch64 wheels for CPython 3.13 into python/, the package beside them, no
__pycache__. Needs the package index (pip), so `--quick` sizes the package alone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from .core import RowResult

LAYERS = Path(__file__).resolve().parents[3] / "layers"
# A budget, not a Lambda limit (those are 50 MB zipped and 250 MB unzipped with the function):
# every cold start on a new host fetches and unpacks the layer.
GOAL_MB = 10.0
MB = 1e6


def _build(layer: Path, into: Path, *, dependencies: bool) -> None:
    target = into / "python"
    target.mkdir(parents=True)
    if dependencies:
        subprocess.run(
            [
                sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                "--target", str(target), "--platform", "manylinux2014_aarch64", "--implementation", "cp",
                "--python-version", "3.13", "--only-binary=:all:", "-r", str(layer / "requirements.txt"),
            ],
            check=True,
            capture_output=True,
        )  # fmt: skip
    shutil.copytree(layer / "klingflow", target / "klingflow", ignore=shutil.ignore_patterns("__pycache__"))


def _sizes(root: Path) -> tuple[float, float]:
    """(unzipped, zipped) in MB, without bytecode caches (Lambda writes none into /opt)."""
    archive = root.with_suffix(".zip")
    unzipped = 0
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
        for folder, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            for name in files:
                path = Path(folder) / name
                unzipped += path.stat().st_size
                zipped.write(path, path.relative_to(root))
    return unzipped / MB, archive.stat().st_size / MB


def run(*, runs: int, quick: bool) -> list[RowResult]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="klingflow-layer-") as scratch:
        for name, label in (
            ("klingflow", "bundled"),
            ("klingflow-slim", "slim, with the AWS-managed Powertools"),
        ):
            root = Path(scratch) / name
            _build(LAYERS / name, root, dependencies=not quick)
            unzipped, zipped = _sizes(root)
            rows.append(
                RowResult(
                    path=f"layer zipped for arm64: {label}" + (" (package only)" if quick else ""),
                    floor="",
                    unit="MB",
                    ours=[zipped],
                    floors=[],
                    goal_op="<=",
                    goal=GOAL_MB,
                    ratios_override=[zipped],
                    notes={"unzipped": f"{unzipped:.1f} MB"},
                )
            )
    return rows
