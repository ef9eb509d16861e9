"""cosmodm_ops.archive."""
