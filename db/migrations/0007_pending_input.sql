-- What a session waits for a person to answer (SPEC §8): null, or {input_id, kind, tool?,
-- input?, question?, options?, since}. Written with the rest of the row by the session
-- workflow, which holds it durably.
alter table agent_sessions add column if not exists pending_input jsonb;
