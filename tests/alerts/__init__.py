"""Tests of llmpulse.alerts."""
