"""The release gate (``calrl compare``): paired differences of a candidate against a baseline, their
statistics, typed results and the comparison report."""
