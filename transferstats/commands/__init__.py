"""One module per ``transferstats`` subcommand: argument parsing and terminal output only."""
