"""The municipalities people choose by name: the official list of codes with Finnish and Swedish names."""
from __future__ import annotations

from seteli_shared.municipalities import all_municipalities, municipality, name_of, sorted_for


def test_the_list_holds_every_municipality_once_with_both_names():
    found = all_municipalities()
    assert 300 <= len(found) <= 320
    assert len({m.code for m in found}) == len(found)
    assert all(len(m.code) == 3 and m.code.isdigit() and m.name_fi and m.name_sv for m in found)


def test_names_in_finnish_and_swedish():
    assert (name_of("091", "fi"), name_of("091", "sv"), name_of("091", "en")) == ("Helsinki", "Helsingfors", "Helsinki")
    assert municipality("049").name_sv == "Esbo" and municipality("445").name_fi == "Parainen"
    assert name_of("999", "fi") == "999"


def test_sorted_by_name_the_nordic_way():
    names = [m.name("fi") for m in sorted_for("fi")]
    assert names.index("Vöyri") < names.index("Ylöjärvi") < names.index("Äänekoski")
    assert [m.name("sv") for m in sorted_for("sv")][:2] == ["Ackas", "Alajärvi"]  # Akaa in Swedish
