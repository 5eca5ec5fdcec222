"""Config: the model (types), the rules (cross-field and system), the loader (files)."""
