"""The local sandbox: the whole pipeline on loopback, built from template.yaml."""

from .sandbox import Sandbox, SandboxOptions

__all__ = ["Sandbox", "SandboxOptions"]
