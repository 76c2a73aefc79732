"""A bulk CSV file's lines and header go through the same identity-code matcher as every request
(``seteli_shared.privacy``): each spelling of the issue is refused, naming the column, never the value."""
from __future__ import annotations

import pytest

from payments.charging.csv_format import rows
from seteli_shared.errors import DomainError

HEADER = "voucher_code;provider_reference;service_date;units;tariff\n"
SPELLINGS = ["131052-308T", "131052 308T", "131052\u00a0308T", "x131052-308Ty", "131052308T", "HETU131052308T",
             "010101a123n", "010101Y123N", "\uff11\uff13\uff11\uff10\uff15\uff12\uff13\uff10\uff18T",
             "131052\u200b-308T", "asiakas 131052 \u2013 308t"]


def _rows(text: str) -> list:
    return list(rows([text.encode()]))


@pytest.mark.parametrize("code", SPELLINGS)
@pytest.mark.parametrize("column", ["provider_reference", "tariff", "voucher_code"])
def test_a_code_in_a_cell_refuses_its_line_naming_the_column(code: str, column: str):
    cells = {"voucher_code": "7KQ2M9XH4D=", "provider_reference": "visit-1", "service_date": "1.6.2026",
             "units": "1,5", "tariff": "weekday"}
    cells[column] = code
    line = ";".join(cells[c] for c in HEADER.strip().split(";"))
    ok, refused = _rows(HEADER + "7KQ2M9XH4D=;visit-0;1.6.2026;1;weekday\n" + line + "\n")
    assert ok.reason is None and ok.values["provider_reference"] == "visit-0"
    assert (refused.line, refused.reason, refused.fields, refused.values) == (3, "personal_identity_code", [column], {})


@pytest.mark.parametrize("code", SPELLINGS)
def test_a_code_in_the_header_refuses_the_file_without_echoing_it(code: str):
    with pytest.raises(DomainError) as refused:
        _rows(f"voucher_code;{code};service_date;units\n7KQ2M9XH4D=;visit-1;1.6.2026;1\n")
    body = refused.value.body()
    assert body["error"]["reason"] == "personal_identity_code"
    assert body["error"]["details"]["errors"] == [{"loc": ["body", "header"], "reason": "personal_identity_code"}]
    assert "131052" not in str(body) and "010101" not in str(body)


def test_dates_amounts_ibans_and_phone_numbers_in_cells_are_no_codes():
    lines = _rows(HEADER + "7KQ2M9XH4D=;FI2112345600000785;13.10.2052;1 000,50;weekday\n"
                           "7KQ2M9XH4D=;+358401234567;2026-06-01;2;040 123 4567\n")
    assert len(lines) == 2 and all(r.reason != "personal_identity_code" for r in lines), lines
