"""Cold start: the garbage collector waits until a function's code and service are loaded.

A handler imports this module before anything else, and importing it pauses the collector.
`settle()`, called by `runtime.Lazy` once the function's service is built, moves every object
loaded so far into the permanent generation and resumes collecting.

What a cold start creates (modules, classes, clients, validators) lives as long as the container,
so every collection during it scans objects that are all still referenced: about a tenth of a
handler's cold init, measured in docs/performance.md. Frozen, they are never scanned again, so a
warm invocation's collections only look at what that invocation made. Memory is not held back:
while paused, objects are still freed when their last reference goes, and only reference cycles
wait for `settle()`. Frozen objects that later become cyclic garbage are never collected, which
suits what a cold start loads: it lives as long as the container.
"""

from __future__ import annotations

import gc


class _Pause:
    def __init__(self) -> None:
        self.held = gc.isenabled()  # a caller that disabled it already keeps it disabled
        gc.disable()

    def settle(self) -> None:
        if self.held:
            self.held = False
            gc.freeze()
            gc.enable()


_pause = _Pause()


def settle() -> None:
    """End the pause (once; later calls do nothing)."""
    _pause.settle()
