"""Errors of the `pricing` package."""

from __future__ import annotations


class PricingError(Exception):
    """Base of the `pricing` package's errors."""


class InvalidUsage(PricingError, ValueError):
    """Token counts that cannot describe a call (negative, or a part larger than its whole)."""
