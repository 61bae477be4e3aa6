"""lmp_bench."""
