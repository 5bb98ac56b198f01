"""Training: dataset checks, the tiny test model, and the fine-tuning entry point."""
