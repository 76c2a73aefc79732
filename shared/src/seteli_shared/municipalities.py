"""Finland's municipalities by their official three-digit codes, with their Finnish and Swedish names
(``data/municipalities.csv``), so that people choose a municipality by its name and the system keeps
its code.

The file is Statistics Finland's classification of municipalities as published in Yleisradio's open
``geodata`` repository (``finland/finland-hva-2021.topo.json``: code, ``name_fi``, ``name_sv``; Swedish
names as the Institute for the Languages of Finland recommends): 309 municipalities, the classification
in force from 2021. Statistics Finland's own files could not be downloaded where this was built; when a
municipality is merged, replace the file with the year's classification (one line per municipality:
``code,name_fi,name_sv``) and the tests tell what changed."""
from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache
from pathlib import Path

DATA = Path(__file__).parent / "data" / "municipalities.csv"
#: where the list comes from (shown beside it where it matters)
SOURCE = "Statistics Finland, classification of municipalities (309 municipalities, from 2021)"


@dataclass(frozen=True)
class Municipality:
    code: str
    name_fi: str
    name_sv: str

    def name(self, lang: str) -> str:
        """The name in the reader's language: Swedish for ``sv``, else Finnish (English uses the Finnish
        name, as Finland's own English texts do)."""
        return self.name_sv if lang == "sv" else self.name_fi


@cache
def all_municipalities() -> tuple[Municipality, ...]:
    with DATA.open(encoding="utf-8", newline="") as f:
        return tuple(Municipality(r["code"], r["name_fi"], r["name_sv"]) for r in csv.DictReader(f))


@cache
def _by_code() -> dict[str, Municipality]:
    return {m.code: m for m in all_municipalities()}


def municipality(code: str) -> Municipality | None:
    return _by_code().get(code)


def name_of(code: str, lang: str) -> str:
    """The municipality's name in ``lang``; the code itself when it names no municipality of the list."""
    found = municipality(code)
    return found.name(lang) if found else code


def sorted_for(lang: str) -> list[Municipality]:
    """Every municipality in the alphabetical order of its name in ``lang`` (å, ä and ö after z, as
    Finnish and Swedish sort them)."""
    order = {c: i for i, c in enumerate("abcdefghijklmnopqrstuvwxyzåäö")}

    def key(m: Municipality) -> list[int]:
        return [order.get(c, ord(c)) for c in m.name(lang).lower()]

    return sorted(all_municipalities(), key=key)
