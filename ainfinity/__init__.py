"""ainfinity: a self-hosted control plane for LLM fine-tuning."""

__version__ = "0.1.0"
