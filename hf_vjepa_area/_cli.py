"""How the example scripts end: a user error is one line on stderr and exit status 2, never a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable


def run_main(main: Callable[[], int | None]) -> None:
    """Run a script's `main`: `SystemExit("error: ...")` prints that line and exits with status 2; any other
    exit status passes through."""
    try:
        code = main()
    except SystemExit as exit:
        if isinstance(exit.code, str):
            print(exit.code, file=sys.stderr)
            raise SystemExit(2) from None
        raise
    raise SystemExit(code)
