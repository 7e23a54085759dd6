"""Whether a newer botocore than the one the layers bundle exists: `make botocore-check`.

Both layers bundle botocore at one exact version (layers/klingflow/botocore.txt), so a build
next month ships the botocore the tests ran against, and the AWS models trimmed from it
(klingflow/infra/awsmodels.py) are the ones the code was checked with. A pin does not move by
itself: this asks PyPI (`pip index versions botocore`) and says when a newer one exists, and
what to do about it. Exit status: 0 when the pin is the newest, 1 when a newer one exists, 2
when the pin or PyPI's answer cannot be read.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PIN_FILE = REPO / "layers" / "klingflow" / "botocore.txt"


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def pinned(requirements: str) -> str:
    """The exact version `botocore==X.Y.Z` names in a requirements file's text."""
    for raw in requirements.splitlines():
        line = raw.split("#", 1)[0].strip()
        if line.startswith("botocore"):
            found = re.fullmatch(r"botocore\s*==\s*(\d+(?:\.\d+)*)", line)
            if found:
                return found.group(1)
            raise ValueError(
                f"{PIN_FILE.name}: {line!r} is not an exact pin; write botocore==X.Y.Z "
                "(the version the tests ran against)"
            )
    raise ValueError(f"{PIN_FILE.name} names no botocore; add botocore==X.Y.Z")


def available(pip_output: str) -> list[str]:
    """The release versions in `pip index versions` output, newest first as pip lists them."""
    found = re.search(r"^Available versions:\s*(.+)$", pip_output, re.MULTILINE)
    if not found:
        raise ValueError("pip index versions answered no 'Available versions:' line")
    return [v.strip() for v in found.group(1).split(",") if re.fullmatch(r"\d+(?:\.\d+)*", v.strip())]


def newer(pin: str, versions: Iterable[str]) -> list[str]:
    """The versions released after the pin, newest first."""
    return sorted((v for v in versions if _version(v) > _version(pin)), key=_version, reverse=True)


def verdict(pin: str, versions: Iterable[str]) -> tuple[int, str]:
    later = newer(pin, versions)
    if not later:
        return 0, f"botocore {pin} (layers/klingflow/botocore.txt) is the newest on PyPI."
    return 1, (
        f"botocore {later[0]} is on PyPI; the layers bundle {pin} ({len(later)} release(s) behind). "
        f"To take it: set botocore=={later[0]} in layers/klingflow/botocore.txt, "
        f"`.venv/bin/pip install -U boto3 botocore=={later[0]}` so the tests and the sandbox use it too, "
        "run the tests touching AWS (make test), then `make build` (the models are trimmed from it)."
    )


def main() -> int:
    try:
        pin = pinned(PIN_FILE.read_text())
        answer = subprocess.run(
            [sys.executable, "-m", "pip", "index", "versions", "botocore", "--disable-pip-version-check"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        versions = available(answer.stdout)
    except (ValueError, OSError, subprocess.SubprocessError) as error:
        print(f"botocore-check: {error}", file=sys.stderr)
        return 2
    status, message = verdict(pin, versions)
    print(message)
    return status


if __name__ == "__main__":
    sys.exit(main())
