"""Defaults of calling providers, shared by the clients that use them and by the settings that
may override them (flows/configs.py): defined once here, in a module that imports nothing, so
the settings every handler loads at cold start do not load the providers' clients."""

from __future__ import annotations

from typing import Final

# One provider call's limit, and the rate that turns a price quoted in yuan into dollars.
PROVIDER_TIMEOUT_S: Final = 20.0
USD_PER_CNY: Final = 0.14
# Circuit breaker per provider: open after this many consecutive failures, probe after cool-down.
BREAKER_FAILURES: Final = 3
BREAKER_COOL_DOWN_S: Final = 60
