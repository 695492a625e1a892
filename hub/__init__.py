"""gpuclub hub: a shared, OpenAI-compatible API over a club's GPUs."""

__version__ = "0.1.0"
