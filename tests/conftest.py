"""Shared fixtures for the llmpulse test suite."""

from __future__ import annotations
