"""One module per `adacsc` subcommand; each defines `add_parser(subparsers)` that registers itself."""
