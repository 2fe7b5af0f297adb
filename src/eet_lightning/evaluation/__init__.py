"""Evaluation protocols and the oracles that score transfers."""
