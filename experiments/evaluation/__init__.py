"""Domain evaluations called at the end of validation/test epochs; usable outside Lightning too."""
