"""Pydantic models of what the API takes and returns."""
