"""lmp_data."""
