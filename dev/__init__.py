"""`semo dev`: the whole system on one machine, on embedded Postgres and the Temporal dev
server, as supervised child processes. Imports the API and the database packages; only the CLI
imports it."""
