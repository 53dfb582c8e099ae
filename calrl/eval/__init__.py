"""Evaluation: the metrics runner over prediction records, typed results, reports and plots."""
