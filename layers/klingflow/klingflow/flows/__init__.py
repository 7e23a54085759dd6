"""What each function does, one module per function, named after it."""
