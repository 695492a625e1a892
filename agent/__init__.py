"""gpuclub agent: shares an OpenAI-compatible server on this machine with the club's hub."""

__version__ = "0.1.0"
