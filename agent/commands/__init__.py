"""One module per CLI command: `add_arguments(parser)` and `command(args) -> int`."""
