"""cosmodm_ops.cameras."""
