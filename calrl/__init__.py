"""calrl: calibration-aware post-training of language models on Hugging Face TRL."""

__version__ = "0.1.0"
