"""Test helper (tests/test_signals.py): a Python process started with this directory on PYTHONPATH
stops just before it imports the module named by ``HFSTREAM_TEST_PAUSE_AT``, says so on the file
descriptor ``HFSTREAM_TEST_PAUSE_FD``, and waits there until a signal ends the wait. The test sends
its signal on that word: "during that import" is an event, not a guess at a delay.

Both variables are taken out of the environment at once, so no process started later pauses."""

import os
import sys

_TARGET = os.environ.pop("HFSTREAM_TEST_PAUSE_AT", None)
_FD = int(os.environ.pop("HFSTREAM_TEST_PAUSE_FD", "-1"))


class _PauseBefore:
    def find_spec(self, name, path=None, target=None):
        if name == _TARGET:
            sys.meta_path.remove(self)
            os.write(_FD, f"paused before importing {name}\n".encode())
            import time

            while True:  # a handler ends this: by exiting, or by raising KeyboardInterrupt here
                time.sleep(3600)
        return None


if _TARGET:
    sys.meta_path.insert(0, _PauseBefore())
