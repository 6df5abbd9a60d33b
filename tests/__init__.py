"""streamer's tests: a package, so helpers are imported as `tests.helpers`, never through sys.path."""
