"""Serving: every model a job produced (and the base models) behind an OpenAI-compatible API.

`registry` knows which models exist and who may call them; `gateway` admits a request and
streams it through to the inference worker (`worker/`, a separate process: the API process
never imports torch); `supervisor` starts that worker on first use, checks its health and
restarts it when it crashes; `service` is what the routers call.
"""
