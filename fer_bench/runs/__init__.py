"""Runs: one run start to finish (run), a grid of them (experiment, on local workers), an ensemble
of finished runs, and a search over run options (tune)."""
