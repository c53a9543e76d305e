"""Provider feeds in the seed's XML shape, written by the tests themselves (no ../shared needed).

The shape (``../shared/data/marketplace/README.md``)::

    <eventList version="1.0"> -> <output> -> <base_event base_event_id sell_mode [organizer_company_id] title>
      -> <event event_start_date event_end_date event_id sell_from sell_to sold_out>
        -> <zone zone_id capacity price name numbered/>

:data:`RESPONSE_1` and :data:`RESPONSE_2` are the two consecutive polls the seed describes, rebuilt
from their parts: three online plans first; then one plan changed (Los Morancos ends later),
one unchanged but for capacities (Camela), one left the feed (Pantomima Full) and one offline
plan with an impossible date (Tributo a Juanito Valderrama: broken, and never searchable).
``test_feeds_match_the_seeds_files`` checks they equal the seed's files byte for byte when
``../shared`` is there.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from xml.sax.saxutils import quoteattr

_HEAD = ('<?xml version="1.0" encoding="UTF-8"?>\n'
         '<eventList xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" version="1.0" '
         'xsi:noNamespaceSchemaLocation="eventList.xsd">\n   <output>\n')
_TAIL = "   </output>\n</eventList>"  # no trailing newline, like the seed's files


@dataclass(frozen=True)
class Zone:
    zone_id: str
    capacity: int
    price: str  # a decimal string, "20.00"
    name: str
    numbered: bool = True

    def xml(self) -> str:
        return (f"            <zone zone_id={quoteattr(self.zone_id)} capacity=\"{self.capacity}\" "
                f"price={quoteattr(self.price)} name={quoteattr(self.name)} "
                f"numbered=\"{str(self.numbered).lower()}\" />\n")


@dataclass(frozen=True)
class Plan:
    """One ``<base_event>`` with its single ``<event>`` (the seed's feeds have one per base event)."""

    base_id: str
    plan_id: str
    title: str
    start: str  # naive local time, YYYY-MM-DDTHH:MM:SS (not checked here: broken plans are allowed)
    end: str
    sell_from: str
    sell_to: str
    zones: tuple[Zone, ...] = field(default_factory=tuple)
    sell_mode: str = "online"
    organizer: str | None = None
    sold_out: bool = False

    def xml(self) -> str:
        organizer = "" if self.organizer is None else f" organizer_company_id={quoteattr(self.organizer)}"
        return (f"      <base_event base_event_id={quoteattr(self.base_id)} sell_mode={quoteattr(self.sell_mode)}"
                f"{organizer} title={quoteattr(self.title)}>\n"
                f"         <event event_start_date={quoteattr(self.start)} event_end_date={quoteattr(self.end)} "
                f"event_id={quoteattr(self.plan_id)} sell_from={quoteattr(self.sell_from)} "
                f"sell_to={quoteattr(self.sell_to)} sold_out=\"{str(self.sold_out).lower()}\">\n"
                + "".join(z.xml() for z in self.zones)
                + "         </event>\n      </base_event>\n")


def document(*plans: Plan) -> bytes:
    """A provider answer listing ``plans`` in order."""
    return (_HEAD + "".join(p.xml() for p in plans) + _TAIL).encode()


CAMELA = Plan("291", "291", "Camela en concierto", "2021-06-30T21:00:00", "2021-06-30T22:00:00",
              "2020-07-01T00:00:00", "2021-06-30T20:00:00",
              (Zone("40", 243, "20.00", "Platea"), Zone("38", 100, "15.00", "Grada 2", False),
               Zone("30", 90, "30.00", "A28")))
PANTOMIMA = Plan("322", "1642", "Pantomima Full", "2021-02-10T20:00:00", "2021-02-10T21:30:00",
                 "2021-01-01T00:00:00", "2021-02-09T19:50:00", (Zone("311", 2, "55.00", "A42"),), organizer="2")
MORANCOS = Plan("1591", "1642", "Los Morancos", "2021-07-31T20:00:00", "2021-07-31T21:00:00",
                "2021-06-26T00:00:00", "2021-07-31T19:50:00",
                (Zone("186", 2, "75.00", "Amfiteatre"), Zone("186", 16, "65.00", "Amfiteatre", False)), organizer="1")
TRIBUTO = Plan("444", "1642", "Tributo a Juanito Valderrama", "2021-09-31T20:00:00", "2021-09-31T21:00:00",
               "2021-02-10T00:00:00", "2021-09-31T19:50:00", (Zone("7", 22, "65.00", "Amfiteatre", False),),
               sell_mode="offline", organizer="1")

#: The first poll: three online plans (two share plan id 1642 under different base events).
RESPONSE_1 = document(CAMELA, PANTOMIMA, MORANCOS)
#: The second poll: Camela's capacities change (not a plan value), Los Morancos ends 20 minutes
#: later, Pantomima Full left the feed, and an offline plan with a 31 September arrives (skipped).
RESPONSE_2 = document(
    replace(CAMELA, zones=(Zone("40", 240, "20.00", "Platea"), Zone("38", 50, "15.00", "Grada 2", False),
                           Zone("30", 90, "30.00", "A28"))),
    replace(MORANCOS, end="2021-07-31T21:20:00",
            zones=(Zone("186", 0, "75.00", "Amfiteatre"), Zone("186", 14, "65.00", "Amfiteatre", False))),
    TRIBUTO)

RESPONSES = {"response_1.xml": RESPONSE_1, "response_2.xml": RESPONSE_2}


def write_feeds(directory: Path, *documents: bytes) -> Path:
    """Write ``documents`` into ``directory`` as ``00.xml``, ``01.xml``… (the mock provider serves
    them in that order); return the directory."""
    directory.mkdir(parents=True, exist_ok=True)
    for n, body in enumerate(documents):
        (directory / f"{n:02d}.xml").write_bytes(body)
    return directory


def shared_data() -> Path | None:
    """``shared/data/marketplace`` beside (or above) the repository, if it is there."""
    return next((p / "shared" / "data" / "marketplace" for p in Path(__file__).resolve().parents
                 if (p / "shared" / "data" / "marketplace" / "response_1.xml").exists()), None)
