"""scgenai-flow: transformer cell classifiers for single-cell data, as workflow stages."""

__version__ = "0.1.0"
