"""Toy plugin."""
