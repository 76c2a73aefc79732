"""The ledger's accounts and the double-entry postings of each kind of transaction, pure (no I/O):
debits positive, credits negative, each posting list summing to zero (``balanced``)."""
from __future__ import annotations

from typing import Protocol


class Figures(Protocol):
    """A settlement's figures (``settlement.domain.SettlementFigures``)."""

    gross_cents: int
    fee_cents: int
    net_cents: int


def funder_account(funder_id: str) -> str:
    return f"funder:{funder_id}:voucher_spend"


def provider_payable(provider_id: str) -> str:
    return f"provider:{provider_id}:payable"


def provider_payout_due(provider_id: str) -> str:
    return f"provider:{provider_id}:payout_due"


FEE_REVENUE = "operator:fee_revenue"
#: the operator's client-funds account at the bank: funders pay in, payouts go out, recoveries come back
BANK = "operator:bank"


def provider_recovery_due(provider_id: str) -> str:
    return f"provider:{provider_id}:recovery_due"


def payout_executed_postings(provider_id: str, net_cents: int) -> list[tuple[str, int]]:
    """The bank paid the settlement's payout: what was due to the provider has left the bank account."""
    return balanced([(provider_payout_due(provider_id), net_cents), (BANK, -net_cents)])


def funder_payment_postings(funder_id: str, amount_cents: int) -> list[tuple[str, int]]:
    """A funder's payment came in: it owes that much less."""
    return balanced([(BANK, amount_cents), (funder_account(funder_id), -amount_cents)])


def recovery_claim_postings(provider_id: str, amount_cents: int, fee_cents: int, net_cents: int
                            ) -> list[tuple[str, int]]:
    """Corrections no payout could offset are claimed back: the provider's receivable leaves its payable
    (where the next settlement would have cleared it) for a claim of the net; the fee is given back."""
    return balanced([(provider_payable(provider_id), -amount_cents), (FEE_REVENUE, fee_cents),
                     (provider_recovery_due(provider_id), net_cents)])


def recovery_repayment_postings(provider_id: str, amount_cents: int) -> list[tuple[str, int]]:
    return balanced([(BANK, amount_cents), (provider_recovery_due(provider_id), -amount_cents)])


def balanced(postings: list[tuple[str, int]]) -> list[tuple[str, int]]:
    if sum(amount for _, amount in postings) != 0:
        raise AssertionError(f"unbalanced postings: {postings}")
    return postings



def charge_postings(funder_id: str, provider_id: str, amount_cents: int) -> list[tuple[str, int]]:
    """The funder owes the provider for an accepted charge."""
    return balanced([(funder_account(funder_id), amount_cents), (provider_payable(provider_id), -amount_cents)])



def settlement_postings(provider_id: str, figures: Figures) -> list[tuple[str, int]]:
    """The provider's payable is cleared: the fee to the operator, the net to be paid out."""
    return balanced([
        (provider_payable(provider_id), figures.gross_cents),
        (FEE_REVENUE, -figures.fee_cents),
        (provider_payout_due(provider_id), -figures.net_cents),
    ])



def correction_postings(funder_id: str, provider_id: str, amount_cents: int) -> list[tuple[str, int]]:
    """The charge's posting reversed for the amount removed: the funder owes the provider that much less
    (the provider's payable turns into a receivable the next settlement clears)."""
    return balanced([(funder_account(funder_id), -amount_cents), (provider_payable(provider_id), amount_cents)])


