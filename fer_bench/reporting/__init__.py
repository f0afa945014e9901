"""Reporting: metrics and test-time augmentation, plots, comparisons across runs, scoring on other data."""
