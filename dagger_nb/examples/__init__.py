"""Runnable examples that ship with dagger-nb."""
