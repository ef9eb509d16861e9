"""Cluster follow-up: the red-sequence model, the finder, candidate lists and the cluster catalogue (pure science)."""
