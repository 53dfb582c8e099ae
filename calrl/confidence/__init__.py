"""Confidence parsing, hedge lexicon and abstention detection on model responses."""
