"""Worker processes: the server worker (workflows, DB activities), the client worker
(one per developer machine: terminals), and the command intake."""
