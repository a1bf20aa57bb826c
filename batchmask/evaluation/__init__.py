"""Scoring predictions against ground-truth boxes (the protocol of DESIGN.md)."""
