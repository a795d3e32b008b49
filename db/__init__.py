"""Postgres: migrations and the queries every process shares."""
