"""myticket: a webhook that stores cash-register tickets durably and catalogues their products."""

__version__ = "0.1.0"
