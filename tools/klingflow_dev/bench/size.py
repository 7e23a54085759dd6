"""Row: the layer every function loads, zipped as Lambda receives it, for both stack options.

Built by the layer's own Makefile, as `sam build` builds it (arm64 wheels for CPython 3.13, the
package, and the bytecode of all of it). That needs the package index (pip), so `--quick` builds
and sizes the package alone.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from .core import RowResult

LAYERS = Path(__file__).resolve().parents[3] / "layers"
LOGICAL_IDS = {"klingflow": "KlingflowLayer", "klingflow-slim": "KlingflowSlimLayer"}
# A budget, not a Lambda limit (those are 50 MB zipped and 250 MB unzipped with the function):
# every cold start on a new host fetches and unpacks the layer.
GOAL_MB = 10.0
MB = 1e6


def build_layer(
    layer: Path, into: Path, *, platform: str = "manylinux2014_aarch64", dependencies: bool = True
) -> Path:
    """`sam build`'s build of a layer (its Makefile) into `into`; returns the python/ directory.
    Without `dependencies`, the package alone (no package index needed)."""
    requirements, botocore = ("requirements.txt", "botocore.txt")
    if not dependencies:
        requirements = botocore = os.devnull
    subprocess.run(
        ["make", "--no-print-directory", "-C", str(layer), f"build-{LOGICAL_IDS[layer.name]}",
         f"ARTIFACTS_DIR={into}", f"PYTHON={sys.executable}", f"PLATFORM={platform}",
         f"REQUIREMENTS={requirements}", f"BOTOCORE={botocore}"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return into / "python"


def _sizes(root: Path) -> tuple[float, float]:
    """(unzipped, zipped) in MB, bytecode included (Lambda gets it from the layer, /opt is read-only)."""
    archive = root.with_suffix(".zip")
    unzipped = 0
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
        for folder, _, files in os.walk(root):
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
            build_layer(LAYERS / name, root, dependencies=not quick)
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
