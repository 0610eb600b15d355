"""Checkpoint, logging, metrics and path utilities."""
