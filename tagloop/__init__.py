"""tagloop: the shared domain library of the continuous-learning StackOverflow tagger."""

__version__ = "0.1.0"
