"""Runnable example apps, type-checked and run by the test suite."""
