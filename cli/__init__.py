"""The `semo` command line: the API client, `semo session attach`, and the commands that run
each process (`semo api`, `semo worker ...`, `semo dev`). The top of the import graph: it may
import every package; nothing imports it."""
