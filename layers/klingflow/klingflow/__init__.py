"""klingflow: the shared package every Lambda function imports from its layer."""

__version__ = "0.1.0"
