"""Scoring predictions against ground truth: datasets, protocols, confusion matrices."""
