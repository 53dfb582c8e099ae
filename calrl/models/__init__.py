"""Model helpers: tiny locally built models and tokenizers for tests and the offline demo."""
