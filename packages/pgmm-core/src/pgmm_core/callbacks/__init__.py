"""Built-in training callbacks (objects implementing ``pgmm_on_*`` event hooks)."""
