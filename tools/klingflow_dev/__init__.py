"""klingflow's developer tools: the provider emulator, the local sandbox and the CLI."""

import os
from pathlib import Path

# In Lambda a function's environment is set before the layer is imported, so the layer's
# child loggers carry the function's service name. Here the layer is imported with the tools,
# before any sandbox sets an environment: the template's service name (Globals) is given first,
# or every layer log line would say "service_undefined" and miss its function's handlers.
SERVICE_NAME = "klingflow"
os.environ.setdefault("POWERTOOLS_SERVICE_NAME", SERVICE_NAME)

ASSETS = Path(__file__).parent / "assets"
