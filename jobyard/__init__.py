"""jobyard: a self-hosted serverless job platform."""

__version__ = "0.1.0"
