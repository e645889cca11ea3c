"""Datasets, augmentation, training loops and checkpoints. No Qt."""
