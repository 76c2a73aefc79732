"""The payment references of an invoice, pure: the Finnish reference (*viitenumero*: the base's digits and a
check digit by the weights 7, 3, 1 from the right, Finance Finland's rule) and the same reference as an
international RF creditor reference (ISO 11649: ``RF`` + check digits + the Finnish reference, which is how
Finnish banks convert one into the other)."""
from __future__ import annotations

from stdnum import iso11649

from ..settlement.domain import rf_reference


def check_digit(base: str) -> str:
    """The 7-3-1 check digit of a reference's base digits."""
    weights = (7, 3, 1)
    total = sum(int(d) * weights[i % 3] for i, d in enumerate(reversed(base)))
    return str((10 - total % 10) % 10)


def finnish_reference(base: str | int) -> str:
    """The Finnish reference of a base of 3 to 19 digits (a reference is 4 to 20 digits with its check)."""
    digits = str(base)
    if not digits.isascii() or not digits.isdigit() or not 3 <= len(digits) <= 19 or digits[0] == "0":
        raise ValueError("a Finnish reference's base is 3 to 19 digits, not starting with 0")
    return digits + check_digit(digits)


def is_finnish_reference(reference: str) -> bool:
    ref = reference.replace(" ", "")
    return ref.isascii() and ref.isdigit() and 4 <= len(ref) <= 20 and check_digit(ref[:-1]) == ref[-1]


def rf_of(reference: str) -> str:
    """The RF creditor reference carrying a Finnish reference (``RFkk`` + it)."""
    rf = rf_reference(reference)
    iso11649.validate(rf)
    return rf


def grouped(reference: str) -> str:
    """A Finnish reference as it is printed, in groups of five from the right (``12 34561``)."""
    ref = reference.replace(" ", "")
    head = len(ref) % 5
    groups = ([ref[:head]] if head else []) + [ref[i:i + 5] for i in range(head, len(ref), 5)]
    return " ".join(groups)
