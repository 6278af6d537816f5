"""Decoding methods shared by every model that generates (they reach the model through a small interface)."""
