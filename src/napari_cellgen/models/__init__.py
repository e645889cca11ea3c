"""Torch models and their weight files (safetensors + JSON card). No Qt."""
