"""The project's own exceptions. Each carries the short message a member reads."""

from __future__ import annotations


class ConfigurationError(Exception):
    """A setting is missing or malformed; the bot cannot start."""


class ImagineError(Exception):
    """An error whose message is safe and useful to show to the member as it is."""

    def __init__(self, user_message: str) -> None:
        super().__init__(user_message)
        self.user_message = user_message


class InvalidRequest(ImagineError):
    """The member's input cannot be used: wrong prompt, wrong attachment, too many images."""


class NotAllowed(ImagineError):
    """The member may not do this here (not a moderator, barred, wrong channel)."""


class OverBudget(ImagineError):
    """The request would spend more than the member or the server has left."""


class Unavailable(ImagineError):
    """The bot cannot generate right now (the API key or the owner's account needs attention)."""
