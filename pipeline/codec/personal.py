"""Personal data columns (first, last and full names, e-mail addresses, street addresses, cities, states or
provinces, postcodes, phone numbers): not modelled, only their nulls; each generated value comes from Faker, never
from a training row.

A column is personal when its name says which kind (`name_given`, `email_addr`, `phone_number`; or
`data.columns.NAME: email` and the like) and its values agree (e-mails hold an `@`, phone numbers digits). A city
column is personal only where the training cities are too rare to keep as categories, a state column only where
most of its rows hold a value fewer than k rows hold (peeps' `state_prov`: else `_RARE_` in most rows; airports'
56 states stay categories). Values in a row agree
as the real rows' do: names follow the row's country when the table has a country column (USA, DEU, ...), and
e-mails are built from the row's generated first and last names when the real ones are written from names
(`dieter_koenig@...`), at domains that k or more training rows share. Faker's values may equal a real person's
by chance; the model stores no training name, address or number.
"""
from __future__ import annotations

import functools
import inspect
import re
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.codec.base import Codec, DecodeContext, FitSettings
from pipeline.codec.kinds import Span
from pipeline.codec.sketches import CategorySketch

# role -> (the words of a column name that say it, the share of values that must agree, what agreeing means)
ROLES = {
    "first_name": ({"first", "given", "forename", "firstname", "fname"}, 0.9, r"^[^\d@]+$"),
    "last_name": ({"last", "family", "surname", "lastname", "lname"}, 0.9, r"^[^\d@]+$"),
    "full_name": ({"fullname", "full", "person", "customer", "patient", "contact"}, 0.9, r"^[^\d@]+ [^\d@]+"),
    "email": ({"email", "mail", "e-mail"}, 0.9, r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$"),
    "street_address": ({"address", "street", "addr"}, 0.8, r"\d.*[A-Za-z]|[A-Za-z].*\d"),
    "city": ({"city", "town", "municipality"}, 0.9, r"^[^\d@]+$"),
    "state": ({"state", "province", "prov", "stateprov"}, 0.9, r"^[^\d@]+$"),
    "postcode": ({"postcode", "zip", "zipcode", "postal", "plz"}, 0.9, r"\d"),
    "phone_number": ({"phone", "telephone", "tel", "mobile", "fax"}, 0.9, r"(\d\D*){6,}"),
}
NAME_WORDS = {"name", "names"}  # `name` alone is a town's or a product's as often as a person's: never a role
COUNTRY_WORDS = {"country", "nation", "countrycode"}
GENDER_WORDS = {"gender", "sex"}
GENDERS = {"male": "male", "m": "male", "man": "male", "female": "female", "f": "female", "w": "female",
           "woman": "female"}  # a gender column's values -> which of Faker's first names a row gets
DEFAULT_LOCALE = "en_US"
POOL = 4000  # names drawn per part and locale; a row picks one (Faker per row costs ~20 us)
# a country column's values (ISO 3166 alpha-3, alpha-2 or English name) -> Faker's locale for it
COUNTRY_LOCALES = {
    "USA": "en_US", "US": "en_US", "United States": "en_US", "GBR": "en_GB", "GB": "en_GB", "UK": "en_GB",
    "United Kingdom": "en_GB", "CAN": "en_CA", "CA": "en_CA", "Canada": "en_CA", "AUS": "en_AU", "AU": "en_AU",
    "Australia": "en_AU", "NZL": "en_NZ", "NZ": "en_NZ", "New Zealand": "en_NZ", "IRL": "en_IE", "IE": "en_IE",
    "Ireland": "en_IE", "IND": "en_IN", "IN": "en_IN", "India": "en_IN", "DEU": "de_DE", "DE": "de_DE",
    "Germany": "de_DE", "AUT": "de_AT", "AT": "de_AT", "Austria": "de_AT", "CHE": "de_CH", "CH": "de_CH",
    "Switzerland": "de_CH", "FRA": "fr_FR", "FR": "fr_FR", "France": "fr_FR", "BEL": "nl_BE", "BE": "nl_BE",
    "Belgium": "nl_BE", "NLD": "nl_NL", "NL": "nl_NL", "Netherlands": "nl_NL", "ITA": "it_IT", "IT": "it_IT",
    "Italy": "it_IT", "ESP": "es_ES", "ES": "es_ES", "Spain": "es_ES", "MEX": "es_MX", "MX": "es_MX",
    "Mexico": "es_MX", "PRT": "pt_PT", "PT": "pt_PT", "Portugal": "pt_PT", "BRA": "pt_BR", "BR": "pt_BR",
    "Brazil": "pt_BR", "POL": "pl_PL", "PL": "pl_PL", "Poland": "pl_PL", "DNK": "da_DK", "DK": "da_DK",
    "Denmark": "da_DK", "SWE": "sv_SE", "SE": "sv_SE", "Sweden": "sv_SE", "NOR": "no_NO", "NO": "no_NO",
    "Norway": "no_NO", "FIN": "fi_FI", "FI": "fi_FI", "Finland": "fi_FI", "SVN": "sl_SI", "SI": "sl_SI",
    "Slovenia": "sl_SI", "CZE": "cs_CZ", "CZ": "cs_CZ", "Czechia": "cs_CZ", "JPN": "ja_JP", "JP": "ja_JP",
    "Japan": "ja_JP", "CHN": "zh_CN", "CN": "zh_CN", "China": "zh_CN", "RUS": "ru_RU", "RU": "ru_RU",
    "Russia": "ru_RU", "TUR": "tr_TR", "TR": "tr_TR", "Turkey": "tr_TR", "GRC": "el_GR", "GR": "el_GR",
    "Greece": "el_GR", "ZAF": "en_US", "ZA": "en_US", "South Africa": "en_US",
}
FAKER_METHODS = {"first_name": "first_name", "last_name": "last_name", "full_name": "name",
                 "street_address": "street_address", "city": "city", "postcode": "postcode",
                 "phone_number": "phone_number", "email": "user_name"}
MOSTLY_KEPT = 0.5  # a state column whose kept values cover this share of its rows stays categorical
ABBREVIATED = re.compile(r"^[A-Z]{2,3}$")  # NSW, ON, CA: states written as their postal abbreviations
STATE_METHODS = {True: ("state_abbr", "province_abbr"), False: ("administrative_unit",)}  # Faker's, per style
SHAPED = ("phone_number", "postcode")  # without a country column: written in the shapes k training rows share
LOCAL_PART = re.compile(r"^([a-z]+)([._-]?)([a-z]+)\d*$")  # dieter_koenig, rcconte, mb_dias


def name_words(name: str) -> set[str]:
    """`name_given` -> {name, given}, `emailAddr` -> {email, addr}, `E-Mail` -> {e-mail, email, mail}."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name).lower()
    words = set(re.split(r"[^a-z0-9-]+", spaced)) - {""}
    return words | {w.replace("-", "") for w in words} | {p for w in words for p in w.split("-")}


def role_of(name: str, sketch: CategorySketch, min_count: int | None) -> str | None:
    """The personal-data role a string column's name says and its counted values agree with; None for any
    other column. A city is one only when near-unique (too many rare cities to keep as categories), a state only
    when most rows hold a value fewer than `min_count` rows hold (None: the role is already decided)."""
    words = name_words(name)
    for role, (said, share, pattern) in ROLES.items():
        if not words & said or (role == "full_name" and not words & NAME_WORDS):
            continue
        if min_count is not None and (role == "city" and not sketch.looks_like_id(name, min_count) or
                                      role == "state" and sketch.covered(min_count) >= MOSTLY_KEPT):
            return None
        values = list(sketch.counts.items())
        seen = sum(count for _, count in values)
        agreeing = sum(count for value, count in values if isinstance(value, str) and re.search(pattern, value))
        return role if seen and agreeing >= share * seen else None
    return None


def locale_of(value: Any) -> str | None:
    return COUNTRY_LOCALES.get(str(value).strip()) if value is not None else None


class PersonalCodec(Codec):
    """A personal-data column: not modelled, only its nulls; generated from Faker per row's locale."""
    kinds = ("personal",)
    kind = "personal"

    def __init__(self, name: str, arrow_type: pa.DataType, role: str, null_rate: float, nullable: bool,
                 domains: list[tuple[str, float]] | None = None, separator: str | None = None,
                 links: dict[str, str] | None = None, locale: str = DEFAULT_LOCALE,
                 shapes: list[tuple[str, float]] | None = None, abbreviated: bool = False):
        self.name, self.arrow_type, self.role = name, arrow_type, role
        self.null_rate, self.nullable = null_rate, nullable
        self.domains = domains or []   # e-mail domains k or more training rows share, with their shares
        self.separator = separator     # e-mails from names: the separator real local parts use; None: not from names
        self.links = links or {}       # "country", "first_name", "last_name" -> the column this one reads
        self.locale = locale           # the table's locale when no country column gives a row's
        self.shapes = shapes or []     # phone numbers, postcodes: the character shapes k or more rows share
        self.abbreviated = abbreviated  # states written as abbreviations (NSW), not names (New South Wales)

    @property
    def width(self) -> int:
        return int(self.nullable)

    @classmethod
    def fit(cls, field: pa.Field, kind: str, sketch: CategorySketch, settings: FitSettings) -> "PersonalCodec":
        role = settings.role or role_of(field.name, sketch, None)
        if role is None:
            raise ValueError(f"column {field.name!r}: no personal-data role")
        domains, separator, shapes, k = [], None, [], settings.protect or 1
        if role in SHAPED:
            shapes = _shares({_shape(str(value)): 0 for value in sketch.counts}, sketch.counts, k)
        if role == "email":
            counted: dict[str, int] = {}
            locals_: list[tuple[str, int]] = []
            for value, count in sketch.counts.items():
                local, _, domain = str(value).rpartition("@")
                counted[domain.lower()] = counted.get(domain.lower(), 0) + count
                locals_.append((local.lower(), count))
            kept = sorted((d, c) for d, c in counted.items() if c >= k and d)
            total = sum(c for _, c in kept)
            domains = [(d, c / total) for d, c in kept] if total else []
            separator = _name_separator(locals_)
        abbreviated = role == "state" and sum(count for value, count in sketch.counts.items()
                                              if ABBREVIATED.match(str(value))) >= 0.9 * sum(sketch.counts.values())
        return cls(field.name, field.type, role, sketch.nulls / max(sketch.rows, 1), sketch.nulls > 0, domains,
                   separator, locale=settings.config.locale, shapes=shapes, abbreviated=abbreviated)

    @classmethod
    def fit_private(cls, field: pa.Field, kind: str, sketch: Any, settings: FitSettings, noise: Any,
                    fine: Any) -> "PersonalCodec":
        """Only the role the user gave, and a noisy null rate: no domain or style from the training values."""
        role = settings.role or role_of(field.name, sketch, None)
        noisy_nulls = noise.nulls(sketch.nulls, field.name)
        return cls(field.name, field.type, role, min(1.0, noisy_nulls / max(sketch.rows, 1)),
                   noisy_nulls >= noise.post_cut(1), locale=settings.config.locale)

    def linked(self, links: dict[str, str]) -> "PersonalCodec":
        """This codec reading other columns of the row: its country, a name its gender, an e-mail its names."""
        self.links = {key: column for key, column in links.items()
                      if key == "country" or (key == "gender" and self.role in ("first_name", "full_name"))
                      or (self.role == "email" and self.separator is not None and key != "gender")}
        return self

    def needs(self) -> list[str]:
        return list(self.links.values())

    def spans(self, start: int) -> list[Span]:
        return [Span(self.name, "bernoulli", start, 1)] if self.nullable else []

    def encode(self, arr: pa.Array) -> np.ndarray:
        return np.asarray(arr.is_null(), dtype=np.float32).reshape(-1, 1)[:, : self.width]

    def decode(self, block: np.ndarray, context: DecodeContext) -> pa.Array:
        n = len(block)
        is_null = block[:, 0] > 0.5 if self.nullable else np.zeros(n, dtype=bool)
        country = context.columns.get(self.links.get("country", ""))
        locales = (np.array([locale_of(v) or self.locale for v in country.to_pylist()], dtype=object)
                   if country is not None else np.full(n, self.locale, dtype=object))
        gender = context.columns.get(self.links.get("gender", ""))
        genders = (np.array([GENDERS.get(str(v).strip().lower(), "") for v in gender.to_pylist()], dtype=object)
                   if gender is not None else np.full(n, "", dtype=object))
        seed = int(context.rng.integers(2 ** 62))
        values = np.empty(n, dtype=object)
        for locale, sex in sorted(set(zip(locales.tolist(), genders.tolist()))):
            rows = np.flatnonzero((locales == locale) & (genders == sex))
            values[rows] = self._written(locale, sex, rows, context, seed)
        return pa.array(values, pa.string(), mask=is_null).cast(self.arrow_type)  # None (no state there): null

    def _written(self, locale: str, sex: str, rows: np.ndarray, context: DecodeContext, seed: int) -> list[str]:
        from faker import Faker

        fake = Faker(locale)
        fake.seed_instance(seed)
        rng = np.random.default_rng([seed, sum(map(ord, locale + sex))])
        if self.shapes and "country" not in self.links:  # with a country column, the country's own format
            return _from_shapes(self.shapes, len(rows), rng)
        if self.role == "state":
            return _states(fake, self.abbreviated, len(rows), rng)
        if self.role != "email":
            method = FAKER_METHODS[self.role] + (f"_{sex}" if sex and self.role in ("first_name", "full_name") else "")
            pool = [getattr(fake, method)() for _ in range(min(POOL, 4 * len(rows)))]
            pool = [value for value in pool if "x" not in value] or pool  # no phone extensions (555-0100x123)
            return [pool[i].replace("\n", ", ") for i in rng.integers(len(pool), size=len(rows))]  # one line
        first, last = (context.columns.get(self.links.get(key, "")) for key in ("first_name", "last_name"))
        if first is not None and last is not None:
            locals_ = [_ascii(f"{a}{self.separator}{b}") for a, b in zip(
                pc.take(first, pa.array(rows)).to_pylist(), pc.take(last, pa.array(rows)).to_pylist())]
        else:
            pool = [fake.user_name() for _ in range(min(POOL, 4 * len(rows)))]
            locals_ = [pool[i] for i in rng.integers(len(pool), size=len(rows))]
        if self.domains:
            names, shares = zip(*self.domains)
            domains = [names[i] for i in rng.choice(len(names), size=len(rows), p=np.asarray(shares) / sum(shares))]
        else:
            domains = ["example.com"] * len(rows)
        return [f"{local}@{domain}" for local, domain in zip(locals_, domains)]

    def written_as(self) -> str:
        extra = f", from the row's names joined by {self.separator!r}" if self.role == "email" and \
            "first_name" in self.links else ""
        extra += (", as abbreviations (none where the country has none)" if self.abbreviated else "") \
            if self.role == "state" else ""
        country = f", by the row's {self.links['country']}" if "country" in self.links else f" ({self.locale})"
        country += f" and {self.links['gender']}" if "gender" in self.links else ""
        return f"{self.role.replace('_', ' ')} from Faker{country}{extra}"

    def stored_values(self) -> list[str]:
        """The e-mail domains and character shapes k or more training rows share: the only training strings kept."""
        return [domain for domain, _ in self.domains] + [shape for shape, _ in self.shapes]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "personal", "role": self.role, "null_rate": self.null_rate, "nullable": self.nullable,
                "domains": [list(d) for d in self.domains], "separator": self.separator, "links": self.links,
                "locale": self.locale, "shapes": [list(s) for s in self.shapes], "abbreviated": self.abbreviated}

    @classmethod
    def from_dict(cls, field: pa.Field, spec: dict[str, Any]) -> "PersonalCodec":
        return cls(field.name, field.type, spec["role"], spec["null_rate"], spec["nullable"],
                   [tuple(d) for d in spec["domains"]], spec["separator"], spec["links"], spec["locale"],
                   [tuple(s) for s in spec["shapes"]], spec.get("abbreviated", False))


def _states(fake: Any, abbreviated: bool, n: int, rng: np.random.Generator) -> list[str | None]:
    """n states or provinces of the fake's locale (Faker's abbreviations, or its administrative units' names);
    None for every row where the locale has none in that style (en_GB has no abbreviated states)."""
    method = next((m for m in STATE_METHODS[abbreviated] if hasattr(fake, m)), None)
    if method is None:
        return [None] * n
    draw = getattr(fake, method)
    if "include_territories" in inspect.signature(draw).parameters:  # en_US: the 50 states and DC, not Guam
        draw = functools.partial(draw, include_territories=False, include_freely_associated_states=False)
    pool = sorted({draw() for _ in range(POOL // 10)})
    return [pool[i] for i in rng.integers(len(pool), size=n)]


def _shape(value: str) -> str:
    """`240-783-7630` -> `999-999-9999`, `M5V 2T6` -> `A9A 9A9`: each character's class, others kept."""
    return "".join("9" if ch.isdigit() else "A" if ch.isupper() else "a" if ch.islower() else ch for ch in value)


def _shares(keys: dict[str, int], counts: dict[Any, int], k: int) -> list[tuple[str, float]]:
    """Shapes held by k or more rows, with their shares of those rows."""
    for value, count in counts.items():
        keys[_shape(str(value))] += count
    kept = sorted((key, n) for key, n in keys.items() if n >= k)
    total = sum(n for _, n in kept)
    return [(key, n / total) for key, n in kept] if total else []


def _from_shapes(shapes: list[tuple[str, float]], n: int, rng: np.random.Generator) -> list[str]:
    """n values in the shapes, drawn by share, each digit and letter drawn at random."""
    names, shares = zip(*shapes)
    picked = rng.choice(len(names), size=n, p=np.asarray(shares) / sum(shares))
    classes = {"9": "0123456789", "A": "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "a": "abcdefghijklmnopqrstuvwxyz"}
    out = []
    for i in picked:
        shape = names[i]
        draws = rng.random(len(shape))
        out.append("".join(classes[ch][int(u * len(classes[ch]))] if ch in classes else ch
                           for ch, u in zip(shape, draws)))
    return out


def _name_separator(locals_: list[tuple[str, int]]) -> str | None:
    """The separator of e-mail local parts written from names (`dieter_koenig`, `leojacobs`), when most are; else
    None. Ties and no separator at all give ""."""
    named = [(match.group(2), count) for local, count in locals_ if (match := LOCAL_PART.match(local))]
    rows = sum(count for _, count in locals_)
    if not rows or sum(count for _, count in named) < 0.5 * rows:
        return None
    by_separator: dict[str, int] = {}
    for separator, count in named:
        by_separator[separator] = by_separator.get(separator, 0) + count
    return max(sorted(by_separator.items()), key=lambda item: item[1])[0]


def _ascii(text: str) -> str:
    """An e-mail local part from a name: lower case, accents dropped, spaces and apostrophes out."""
    import unicodedata

    text = text.translate(str.maketrans({"ł": "l", "Ł": "L", "ø": "o", "Ø": "O", "æ": "ae", "Æ": "Ae", "ß": "ss",
                                         "đ": "d", "Đ": "D", "þ": "th", "ı": "i"}))  # letters NFKD keeps whole
    plain = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    return re.sub(r"[^a-z0-9._-]", "", plain)
