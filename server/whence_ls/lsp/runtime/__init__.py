"""What runs: the one model worker thread (`worker`) and the background work it pulls when idle
(`attribution_queue`, `verification_queue`), the settings the client sends (`settings`) and the
status the server reports (`status`)."""
