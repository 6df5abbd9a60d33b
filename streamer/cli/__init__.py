"""The command line: `app` parses and dispatches; each command is a module of its own (`run`, `events`, `export`,
`clip`, `serve_ml`, `find`, `password`, `evaluate`, `finetune`) with its flags (`add`) and its work (`run`);
`common` holds what they share. Adding a command is a module and a line in `app.COMMANDS`."""

from streamer.cli.app import main, parse_args, parser

__all__ = ["main", "parse_args", "parser"]
