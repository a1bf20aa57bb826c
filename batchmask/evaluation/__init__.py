"""Scoring predictions against ground-truth boxes (the published seed's protocol, made exact: README, `evaluate`)."""
