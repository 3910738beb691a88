"""What string identifiers look like, so fresh ids can be written like them without repeating any.

`IdShape` records the prefix every id shares and their lengths; `IdTemplates` the skeletons ids share (each run
of digits a 9, each run of letters an a, other characters kept) and, for the common skeletons, each run's
contents and lengths. Both are mergeable sketches over a block's distinct values weighted by their row counts.
`IdTemplate` writes a fresh id from them: pizzaplace's `2015-017257` gives `2015-0000042`.
"""
from __future__ import annotations

import re
import string
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.codec.counts import add_counts, by_count, summed
from pipeline.rowhash import sample_keys

ID_PREFIXES = ("syn-", "syn_", "SYN-", "synthetic-", "x-syn-", "cvae-", "gen-", "s0-")  # fallback fresh-id markers
SHAPE_POSITIONS = 32  # leading characters of a string id column whose character sets the sketch tracks
ID_CHARACTER_CLASSES = (string.digits, string.ascii_uppercase, string.ascii_lowercase)


class IdShape:
    """What string ids look like, mergeable: the characters seen at each leading position (up to the first
    where they differ) and the lengths.
    Fresh ids copy the prefix every training id shares and their usual length, so `2015-017257` gets
    `2015-090000`, not `syn-0` (a parser or a judge that reads the format sees the same format)."""

    def __init__(self) -> None:
        self.characters: list[set[str]] = [set() for _ in range(SHAPE_POSITIONS)]
        self.lengths: dict[int, int] = {}  # length -> ids that long

    def update(self, values: pa.Array, counts: pa.Array) -> None:
        """`values`: a block's distinct ids, `counts`: how many rows hold each."""
        for length, count in summed(pc.utf8_length(values), counts):
            self.lengths[length] = self.lengths.get(length, 0) + count
        for p in range(min(SHAPE_POSITIONS, max(self.lengths))):
            self.characters[p] |= set(pc.unique(pc.utf8_slice_codeunits(values, p, p + 1)).to_pylist()) - {""}
            if len(self.characters[p]) > 1:  # the shared prefix ends here: later positions are never read
                break

    def merge(self, other: "IdShape") -> None:
        for p, seen in enumerate(other.characters):
            self.characters[p] |= seen
        for length, count in other.lengths.items():
            self.lengths[length] = self.lengths.get(length, 0) + count

    def fresh_prefix(self, min_count: int) -> tuple[str, int] | None:
        """(prefix, digits) for fresh ids that no training id can equal: the prefix every training id starts
        with, then either a character none of them has next (of a class they use there: digit, upper or lower
        case) with the row number padded to their most common length, or the row number padded one past their
        longest. None when fewer than k ids share the prefix (it would be one person's value) or ids are longer
        than SHAPE_POSITIONS (text, uuids: the fallback marker reads better than 30 digits)."""
        if sum(self.lengths.values()) < min_count:
            return None
        common = ""
        for seen in self.characters:
            if len(seen) != 1 or min(self.lengths) <= len(common):
                break
            common += next(iter(seen))
        seen = self.characters[len(common)] if len(common) < SHAPE_POSITIONS else set()
        pool = "".join(chars for chars in ID_CHARACTER_CLASSES if seen & set(chars))
        free = [c for c in reversed(pool) if c not in seen]
        usual = max(self.lengths, key=lambda length: (self.lengths[length], length))
        if free and usual <= SHAPE_POSITIONS:
            return common + free[0], max(usual - len(common) - 1, 0)
        longest = max(self.lengths)
        return (common, longest + 1 - len(common)) if longest < SHAPE_POSITIONS else None


ID_RUNS = {"9": ("[0-9]+", string.digits), "a": ("[A-Za-z]+", string.ascii_letters)}  # skeleton symbol: run, pool
MAX_TEMPLATE_LENGTH = 24  # skeleton characters at most: longer ids are text, not a format
TEMPLATES_PER_BLOCK = 8   # the most common skeletons of each block get their runs counted


def id_skeletons(present: pa.Array) -> pa.Array:
    """`^{223}_{93}Np130` -> `^{9}_{9}a9`: each run of digits a 9, each run of letters an a, other characters kept
    (they are never 9 or a, so a skeleton reads back one way)."""
    return pc.replace_substring_regex(pc.replace_substring_regex(present, "[0-9]+", "9"), "[A-Za-z]+", "a")


def runs_pattern(skeleton: str) -> str:
    """An RE2 pattern whose named groups r0, r1, ... capture the runs of an id with this skeleton."""
    return "^" + "".join(f"(?P<r{j}>{ID_RUNS[ch][0]})" if ch in ID_RUNS else re.escape(ch)
                         for j, ch in enumerate(skeleton)) + "$"


class IdTemplates:
    """What string ids are made of, mergeable: how many ids share each skeleton (id_skeletons), and for the most
    common skeletons the counts of each run's contents and lengths; also the longest run of digits in any id.
    A fresh id (IdTemplate) is drawn from this: pizzaplace's `2015-017257` gives `2015-0000042`, nuclides'
    `^{223}_{93}Np130` gives `^{0042}_{93}Np130`: same punctuation, same frequent runs, and one run of digits
    longer than any training id has, so no training id can equal it."""

    def __init__(self, bound: int):
        self.bound = bound
        self.skeletons: dict[str, int] = {}
        self.contents: dict[str, list[dict[str, int]]] = {}  # skeleton -> per position, run -> ids (pruned)
        self.lengths: dict[str, list[dict[int, int]]] = {}   # skeleton -> per position, run length -> ids
        self.longest_digits = 0

    def update(self, values: pa.Array, counts: pa.Array) -> None:
        """`values`: a block's distinct ids, `counts`: how many rows hold each (a column of few distinct values,
        a category that may still turn out an id, costs its distinct values, not its rows)."""
        digit_runs = pc.list_flatten(pc.split_pattern_regex(values, "[^0-9]+"))
        self.longest_digits = max(self.longest_digits, pc.max(pc.utf8_length(digit_runs)).as_py() or 0)
        skeletons = id_skeletons(values)
        pairs = sorted(summed(skeletons, counts), key=by_count)
        add_counts(self.skeletons, pairs, self.bound)
        for skeleton, _ in pairs[:TEMPLATES_PER_BLOCK]:
            if len(skeleton) > MAX_TEMPLATE_LENGTH or not set(skeleton) & set(ID_RUNS):
                continue
            mask = pc.equal(skeletons, skeleton)
            runs, rows = pc.extract_regex(pc.filter(values, mask), runs_pattern(skeleton)), pc.filter(counts, mask)
            contents = self.contents.setdefault(skeleton, [{} for _ in skeleton])
            lengths = self.lengths.setdefault(skeleton, [{} for _ in skeleton])
            for j in (j for j, ch in enumerate(skeleton) if ch in ID_RUNS):
                run = runs.field(f"r{j}")
                add_counts(contents[j], summed(run, rows, self.bound), self.bound)
                add_counts(lengths[j], summed(pc.utf8_length(run), rows), self.bound)

    def merge(self, other: "IdTemplates") -> None:
        self.longest_digits = max(self.longest_digits, other.longest_digits)
        add_counts(self.skeletons, other.skeletons.items(), self.bound)
        for skeleton, contents in other.contents.items():
            mine = self.contents.setdefault(skeleton, [{} for _ in skeleton])
            lengths = self.lengths.setdefault(skeleton, [{} for _ in skeleton])
            for j in range(len(skeleton)):
                add_counts(mine[j], contents[j].items(), self.bound)
                add_counts(lengths[j], other.lengths[skeleton][j].items(), self.bound)

    def fresh(self, min_count: int, ids: int) -> list[IdTemplate] | None:
        """The templates fresh ids are drawn from: every skeleton with a run of digits that k ids or more share,
        each run's contents and lengths that k ids or more share (rarer contents become random characters of
        a shared length). None when those skeletons cover under half the ids: they are not a format."""
        templates = [template for skeleton, count in self.skeletons.items()
                     if count >= min_count and "9" in skeleton and skeleton in self.contents
                     for template in [IdTemplate.fit(skeleton, count, self.contents[skeleton],
                                                     self.lengths[skeleton], min_count, self.longest_digits + 1)]
                     if template is not None]
        if sum(template.weight for template in templates) * 2 < ids:
            return None
        return sorted(templates, key=lambda template: (-template.weight, template.skeleton))


@dataclass
class IdRun:
    """One run of a template: the contents k ids share with their counts, the weight of the rarer ones, and
    the lengths k ids share (what a rare content is redrawn as)."""
    values: list[str]
    weights: list[int]
    rare: int
    lengths: list[int]
    length_weights: list[int]


@dataclass
class IdTemplate:
    """A skeleton fresh ids are written in. The run at `serial` carries the row number, zero-padded to
    `serial_width`: one digit more than the longest run of digits in any training id, so a fresh id never
    equals one, and row numbers keep fresh ids unique."""
    skeleton: str
    weight: int
    serial: int
    serial_width: int
    runs: dict[int, IdRun]

    @classmethod
    def fit(cls, skeleton: str, weight: int, contents: list[dict[str, int]], lengths: list[dict[int, int]],
            min_count: int, serial_width: int) -> "IdTemplate | None":
        digit_runs = [j for j, ch in enumerate(skeleton) if ch == "9"]
        serial = max(digit_runs, key=lambda j: (len(contents[j]), -j))  # the most varied: most like a counter
        runs = {}
        for j, ch in enumerate(skeleton):
            if ch not in ID_RUNS or j == serial:
                continue
            kept = sorted(((v, n) for v, n in contents[j].items() if n >= min_count), key=by_count)
            shared = sorted((length, n) for length, n in lengths[j].items() if n >= min_count)
            rare = sum(lengths[j].values()) - sum(n for _, n in kept)
            if not shared and rare > 0:
                return None  # no length k ids share to redraw rare contents with
            runs[j] = IdRun([v for v, _ in kept], [n for _, n in kept], max(rare, 0),
                            [length for length, _ in shared], [n for _, n in shared])
        return cls(skeleton, weight, serial, serial_width, runs)

    def write(self, index: np.ndarray, stream: int) -> pa.Array:
        """The fresh ids of rows `index` (their numbers in the whole dataset): a pure function of the row
        number and the column, so any part, worker or rerun writes the same ids."""
        pieces = []
        for j, ch in enumerate(self.skeleton):
            if j == self.serial:
                pieces.append(pc.utf8_lpad(pa.array(index).cast(pa.string()), self.serial_width, "0"))
            elif ch in ID_RUNS:
                pieces.append(self._draw(self.runs[j], ID_RUNS[ch][1], index, (stream * 64 + j) << 16))
            else:
                pieces.append(pa.scalar(ch))
        return pc.binary_join_element_wise(*pieces, "") if len(pieces) > 1 else pieces[0]

    @staticmethod
    def _draw(run: IdRun, pool: str, index: np.ndarray, stream: int) -> pa.Array:
        """Each row's content of one run: a shared content by its share, or (by the rare contents' share)
        random characters of the run's class at a shared length."""
        choice = pick_by_weight([*run.weights, run.rare], sample_keys(index, stream))
        values = np.array([*run.values, ""], dtype=object)[choice]
        rare = np.flatnonzero(choice == len(run.values))
        if len(rare):
            lengths = np.asarray(run.lengths)[pick_by_weight(run.length_weights, sample_keys(index[rare], stream + 1))]
            characters = np.array(list(pool), dtype=object)
            drawn = values[rare]
            for position in range(int(lengths.max())):
                character = characters[(sample_keys(index[rare], stream + 2 + position) * len(pool)).astype(np.int64)]
                drawn = np.where(lengths > position, drawn + character, drawn)
            values[rare] = drawn
        return pa.array(values.tolist(), pa.string())

    def to_dict(self) -> dict[str, Any]:
        return {"skeleton": self.skeleton, "weight": self.weight, "serial": self.serial,
                "serial_width": self.serial_width, "runs": {str(j): vars(run) for j, run in self.runs.items()}}

    @classmethod
    def from_dict(cls, spec: dict[str, Any]) -> "IdTemplate":
        return cls(spec["skeleton"], spec["weight"], spec["serial"], spec["serial_width"],
                   {int(j): IdRun(**run) for j, run in spec["runs"].items()})


def pick_by_weight(weights: list[int] | list[float], keys: np.ndarray) -> np.ndarray:
    """The index each uniform key in [0, 1) falls on, by weight."""
    cumulative = np.cumsum(np.asarray(weights, dtype=np.float64))
    return np.minimum(np.searchsorted(cumulative / cumulative[-1], keys, side="right"), len(cumulative) - 1)
