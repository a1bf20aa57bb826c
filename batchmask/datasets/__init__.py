"""Building classifier datasets (face crops with labels and splits) on the batch engine."""
