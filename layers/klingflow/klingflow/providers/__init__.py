"""Provider dialects: one module each, plus the registry that configures and chooses them."""
