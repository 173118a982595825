"""Prefect flows: the retrain flow, its deployments, and the outcome watcher."""
