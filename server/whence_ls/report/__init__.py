"""Pages for people: renderings of records that the CLI and the server share."""
