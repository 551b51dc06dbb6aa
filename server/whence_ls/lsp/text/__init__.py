"""The documents the server holds: their text and versions (`documents`), the line table that
turns offsets into positions (`line_index`), and LSP positions in a document's encoding
(`positions`)."""
