"""One module per `sdekit` subcommand: add_arguments(parser) and run(args)."""
