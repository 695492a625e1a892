"""Tokenizers an admin attaches to model names, so the hub counts those models' tokens itself."""
