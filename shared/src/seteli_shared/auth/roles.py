"""The roles a caller may hold, and the groups endpoints name."""
from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    OPERATOR = "operator"  # operator staff: runs the platform
    FUNDER_DECISION_MAKER = "funder_decision_maker"  # issues and amends vouchers
    FUNDER_PROVIDER_APPROVER = "funder_provider_approver"  # approves providers into the register
    FUNDER_FINANCE = "funder_finance"  # settlements, invoices
    FUNDER_REPORTING = "funder_reporting"  # reporting viewer
    FUNDER_CASE_SYSTEM = "funder_case_system"  # machine: the funder's case management system
    PROVIDER_MANAGER = "provider_manager"  # register data, prices
    PROVIDER_CHARGER = "provider_charger"  # charges and settlements (accountant)
    PROVIDER_BILLING_SYSTEM = "provider_billing_system"  # machine: the provider's billing system
    CLIENT = "client"  # bound to one voucher


FUNDER_ROLES = frozenset({Role.FUNDER_DECISION_MAKER, Role.FUNDER_PROVIDER_APPROVER, Role.FUNDER_FINANCE,
                          Role.FUNDER_REPORTING, Role.FUNDER_CASE_SYSTEM})
PROVIDER_ROLES = frozenset({Role.PROVIDER_MANAGER, Role.PROVIDER_CHARGER, Role.PROVIDER_BILLING_SYSTEM})
FUNDER_STAFF = FUNDER_ROLES - {Role.FUNDER_CASE_SYSTEM}
PROVIDER_STAFF = PROVIDER_ROLES - {Role.PROVIDER_BILLING_SYSTEM}
