"""The root of the library's user-facing errors.

Commands and services catch `TagloopError` to turn a bad file, bundle or
setting into one clear message; anything else is a bug and keeps its traceback.
Kept free of heavy imports so catching it costs nothing.
"""


class TagloopError(Exception):
    """A problem with input the user controls (a file, a bundle, a setting)."""
