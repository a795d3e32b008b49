-- `session.handed_off`: a hand-off's session event (written with the command's result, in its
-- transaction) records the webhook event, as the other events are recorded by their rows.
create or replace function semo_webhook_handed_off() returns trigger
language plpgsql as $$
begin
    perform semo_webhook_event(new.office_id, 'session.handed_off', new.session_id, null,
        new.data);
    return null;
end $$;

drop trigger if exists session_events_handed_off on session_events;
create trigger session_events_handed_off after insert on session_events for each row
    when (new.kind = 'handed_off')
    execute function semo_webhook_handed_off();
