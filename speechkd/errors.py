"""User-facing exceptions (stdlib only, safe to import anywhere)."""


class SpeechkdError(RuntimeError):
    """A user-facing error: the CLI prints it as one clear line and exits with status 1.

    Raise it for bad input the user can fix (missing file, corrupt audio, mismatched teacher
    metadata, impossible config); always name the file or value at fault in the message.
    """
