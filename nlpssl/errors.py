class NlpsslError(ValueError):
    """A user-facing error: says where, what (with the value) and how to fix it."""
