"""What the server remembers: records of accepted completions and explained lines (`records`),
offers still on screen (`offers`, `kept_completions`), their placement when accepted
(`placement`), what the programmer kept of them (`retention`, `retention_stats`,
`workspace_flags`), other files as context (`repository_context`) and trace searches
(`trace_search`). None of it registers an LSP handler."""
