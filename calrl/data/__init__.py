"""Data loaders: held-out evaluation sets, preference data."""
