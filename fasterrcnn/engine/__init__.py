"""Training and inference loops around the model (kept out of the model code)."""
