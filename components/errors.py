"""The one base class of the errors a user can act on.

Every stage raises a subclass of :class:`EmoFlowError` for bad input, bad settings or an
unreachable store, with a message that names the file, row, image or key at fault. Entry
points (the CLI, the flow) catch this one class and print the message; anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations


class EmoFlowError(Exception):
    """An expected failure: the message says what is wrong and where."""
