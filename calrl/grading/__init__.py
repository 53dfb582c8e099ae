"""Answer grading: normalisation, exact match, numeric equality, multiple choice; pluggable."""
