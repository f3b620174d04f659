"""Stage 05 and `make figures`: tables, the plateau analysis, the claims report and every figure, read from saved
files only (no model library is imported here, which the import contract checks)."""
