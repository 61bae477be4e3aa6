"""lmp_model."""
