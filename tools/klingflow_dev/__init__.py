"""klingflow's developer tools: the provider emulator, the local sandbox and the CLI."""

from pathlib import Path

ASSETS = Path(__file__).parent / "assets"
