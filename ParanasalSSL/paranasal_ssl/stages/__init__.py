"""The four stages of the method, each a library function the CLI calls."""
