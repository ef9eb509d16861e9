"""cosmodm_ops.batch."""
