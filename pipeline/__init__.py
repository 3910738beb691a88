"""Conditional synthetic data at cluster scale: config -> source -> encoder -> trainer -> registry -> generator -> sink -> evaluator."""

__version__ = "0.1.0"
