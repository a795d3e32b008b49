"""semo-sessions: run fleets of AI coding agents in real terminals, supervised by Temporal."""
