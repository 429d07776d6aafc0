"""How a handler tells the worker what became of a message."""


class BadMessage(Exception):
    """The message can never be handled (undecodable, invalid, unknown recipe).

    The worker terminates it and copies it to the dead-letter subject with this
    exception's text as the reason; it is never retried."""


class Retry(Exception):
    """Handling failed for now (a dependency is down); try again after `delay_s`."""

    def __init__(self, reason: str, delay_s: float | None = None):
        super().__init__(reason)
        self.delay_s = delay_s


class HandBack(Exception):
    """Not the message's failure: this instance cannot handle it now (it is stopping).

    The message is handed back to the bus at once, for another instance or the restart;
    it is never dead-lettered, however often that happens."""
