"""cosmodm_ops.sim."""
