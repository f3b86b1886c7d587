"""The app's one error type: what a user can fix, said in one line."""
from __future__ import annotations


class AppError(RuntimeError):
    """Anything the user can fix (bad file, missing model, no frames); the message is one line."""
