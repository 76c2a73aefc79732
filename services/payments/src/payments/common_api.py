"""What the rooms' routes share: who may read charges and settlements, a funder id in a path, and the VAT
marking of statements and invoices."""
from __future__ import annotations

from typing import Annotated

from fastapi import Path
from pydantic import BaseModel

from seteli_shared.auth import PROVIDER_STAFF, Role

#: who may read charges, settlements and their statements (each only its own tenant's)
READERS = (Role.OPERATOR, Role.FUNDER_FINANCE, Role.FUNDER_REPORTING, *PROVIDER_STAFF, Role.PROVIDER_BILLING_SYSTEM)
#: a funder id in a path: its contract's shape (it also names the CSV file, so no other characters)
FunderIdPath = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9-]{0,39}$")]


class Vat(BaseModel):
    vat_exempt: bool
    basis: str
    text: dict[str, str]
