"""The inference worker: a separate process that holds the models and generates text.

`python -m ainfinity.serving.worker --socket PATH` serves OpenAI's completion routes on a
unix socket; the control plane's supervisor starts it, and the gateway talks to it.
"""
