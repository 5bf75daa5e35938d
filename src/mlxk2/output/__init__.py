"""Turning operation results into the JSON envelope or human text."""
