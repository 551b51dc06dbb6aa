"""CLI subcommands: each module exposes `add_parser(subparsers)` and imports heavy code lazily."""
