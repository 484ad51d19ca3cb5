"""The one error type of the checkpoint package."""


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or read (the message names the folder or file and the cause)."""
