"""A provider emulator: real HTTP on loopback, speaking each dialect as docs/providers.md documents."""

from .core import Emulator, Faults, Task
from .server import EmulatorServer

__all__ = ["Emulator", "EmulatorServer", "Faults", "Task"]
