"""Tiling, inference, post-processing and measurements. No Qt."""
