"""Prefect tasks: one thin adapter per pipeline stage, each wrapping the core function of the same name."""
