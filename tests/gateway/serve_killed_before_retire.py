"""Child process for the replay test: `tollgate serve` that SIGKILLs itself once its writer has stored a batch
and is about to delete that batch's spill segments: a crash between the store insert and the deletion.

Run from the repository root: `python -m tests.gateway.serve_killed_before_retire serve --config PATH`.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence

from gateway.cli import main
from store.spill import Segment, Spill


def killed_before_retiring(self: Spill, segments: Sequence[Segment]) -> None:
    """Stands in for `Spill.retire`: every row of `segments` is in the store and no segment is deleted yet."""
    os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    Spill.retire = killed_before_retiring  # type: ignore[method-assign]
    sys.exit(main(sys.argv[1:]))
