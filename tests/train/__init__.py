"""Tests for ainfinity.train."""
