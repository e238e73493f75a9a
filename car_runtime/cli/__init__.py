"""Command-line entry points: one module per subcommand, each with ``add_parser`` and ``run``."""
