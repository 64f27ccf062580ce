"""Keep native libraries' chatter (TensorFlow's C++ logging, the MLIR converter's
prints) out of a clean terminal, and show it only when something failed."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def quiet_native_output(
    expected: tuple[type[BaseException], ...] = (),
) -> Iterator[Callable[[str], None]]:
    """Send file descriptors 1 and 2 to a temporary file for the duration; replay it on error.

    Python-level logging is not enough: the converter writes from C++ straight to the fds.
    Yields a function that still reaches the real stderr, for progress lines. EXPECTED
    exceptions (a user's mistake, explained in their own message) replay nothing.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    failed = False
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)

        def say(line: str) -> None:
            os.write(saved_err, (line + "\n").encode())

        try:
            yield say
        except BaseException as exc:
            # Ctrl-C and the user's own mistakes need no native log to explain them
            failed = not isinstance(exc, (*expected, KeyboardInterrupt))
            raise
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved_out, 1)
            os.dup2(saved_err, 2)
            os.close(saved_out)
            os.close(saved_err)
            if failed:
                sink.seek(0)
                sys.stderr.write(sink.read().decode(errors="replace")[-5000:])
