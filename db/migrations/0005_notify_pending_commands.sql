-- The intake LISTENs on `agent_commands` to claim rows others insert. Rows the API inserts
-- are its own, claimed as they are written (status 'running'): waking the intake for them
-- cost a claim query that found nothing, on every API command, right when it starts.
drop trigger if exists agent_commands_notify on agent_commands;
create trigger agent_commands_notify after insert on agent_commands
    for each row when (new.status = 'pending') execute function semo_notify_agent_command();
