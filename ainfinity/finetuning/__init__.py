"""OpenAI's fine-tuning API over native jobs: `"auto"` rules, the OpenAI view, the service."""
