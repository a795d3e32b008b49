"""The output monitor: terminal output in, completion/error/question events out."""
