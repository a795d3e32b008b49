"""Activities: the client machine's terminals (PTY, monitor, persona) and the server's DB writes."""
