"""The ``paranasal-ssl`` command line: one module per subcommand."""
