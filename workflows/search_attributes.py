"""The Temporal search attributes sessions and pools are listed by: one key each, here.

`dev/embedded.py` registers `REGISTERED` with the dev server; the workflows set them and the
command executor queries them."""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

OFFICE_ID = SearchAttributeKey.for_keyword("OfficeId")
ROLE = SearchAttributeKey.for_keyword("Role")
MACHINE_ID = SearchAttributeKey.for_keyword("MachineId")
SESSION_STATUS = SearchAttributeKey.for_keyword("SessionStatus")

#: name -> kind, as `temporal operator search-attribute create` takes them
REGISTERED: dict[str, str] = {
    key.name: "Keyword" for key in (OFFICE_ID, ROLE, MACHINE_ID, SESSION_STATUS)
}
