"""cosmodm_ops.qa."""
