"""Linked tables, the source: a parent table and its child tables read and checked, split by parent, and turned into
the flat training tables the parent and child models learn from.

Why flat tables: each model stays the project's Conditional VAE, trained, tracked and served by the flat pipeline.
- The parent table gains one count column per child table (`<child>.count`): the number of children is a column
  of the parent, learned jointly with its other columns.
- A child table's rows gain their parent's columns (`parent.<column>`), their place in the sequence
  (`sequence.position`, from 0) and its length (`sequence.length`): the child model's conditions, given row by
  row (`data.context`), so generated children follow a generated parent row.
The split is by parent: a parent and all its children are training rows or holdout rows together. Keys are never
modelled as values: the parent key becomes a fresh identifier, the foreign key is left out and written from the
generated parent.
"""
from __future__ import annotations

import hashlib
import json
import posixpath
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline import console
from pipeline.codec.arrow import plain
from pipeline.config import ChildConfig, Config, DataConfig
from pipeline.errors import UserError
from pipeline.rowhash import in_holdout, splitmix64
from pipeline.storage import absolute, digest, filesystem, parquet_files, redact

PARENT_PREFIX = "parent."
PREVIOUS_PREFIX = "previous."
POSITION = "sequence.position"
LENGTH = "sequence.length"
TABLES_FORMAT = "cvae-linked-tables/1"
SPLITS = ("train", "holdout")
LIFT_SHARE = 0.99  # a child column with one value per parent in this share of parents is the parent's column
LIFT_MIN_PARENTS = 10  # ...judged on at least this many training parents with two or more children
HISTORY_MAX_DISTINCT_SHARE = 0.5  # text with more distinct values per row than this is no condition (ids, free text)


def count_column(child: str) -> str:
    return f"{child}.count"


def table_name(path: str) -> str:
    """A table's name from its path: the file (or folder) stem, as its output folder."""
    return posixpath.basename(path.rstrip("/")).split(".")[0] or "table"


@dataclass(frozen=True)
class ChildLayout:
    """How one child table was derived: what its model's context columns hold, as generation needs it."""
    name: str
    foreign_key: str
    order_by: list[str]
    schema: pa.Schema                    # the child table's own columns (the foreign key included), as read
    context: dict[str, str]              # derived context column -> the parent column it copies
    left_out: dict[str, int] = field(default_factory=dict)  # rows not learned from, by reason
    lifted: dict[str, str] = field(default_factory=dict)    # child column -> the parent column that holds it
    history: list[str] = field(default_factory=list)  # child columns whose previous row's value is context

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "foreign_key": self.foreign_key, "order_by": self.order_by,
                "schema": [f"{f.name}: {f.type}" for f in self.schema],
                "arrow_schema": self.schema.serialize().to_pybytes().hex(), "context": self.context,
                "left_out": self.left_out, "lifted": self.lifted, "history": self.history}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ChildLayout":
        schema = pa.ipc.read_schema(pa.py_buffer(bytes.fromhex(data["arrow_schema"])))
        return cls(data["name"], data["foreign_key"], data["order_by"], schema, data["context"], data["left_out"],
                   data["lifted"], data["history"])


@dataclass(frozen=True)
class LinkedTables:
    """The derived flat tables of a linked job: where each split of each table lies, and the child layouts."""
    parent: str                           # the parent table's name (its output folder)
    key: str
    key_type: pa.DataType
    folder: str                           # <storage>/<train.name>.tables
    children: dict[str, ChildLayout]
    parents: dict[str, int]               # split -> parent rows

    def path(self, split: str, table: str) -> str:
        return posixpath.join(self.folder, split, f"{table}.parquet")


def read_whole(path: str, storage_options: dict[str, Any], key: str) -> pa.Table:
    """Every Parquet file under `path` as one table (dictionary columns kept as read)."""
    fs, files = parquet_files(path, storage_options)
    pieces = []
    for file in files:
        try:
            with fs.open(file, "rb") as handle:
                pieces.append(pq.read_table(handle))
        except (pa.ArrowInvalid, OSError) as exc:
            raise UserError(f"{key}: {redact(file)} is not a readable Parquet file ({exc}); replace or remove it") \
                from None
    try:
        return pa.concat_tables(pieces)
    except pa.ArrowInvalid:
        raise UserError(f"{key}: the files under {redact(path)} do not share one schema; make them share one") from None


def key_hash(keys: pa.Array) -> np.ndarray:
    """(n,) uint64: a deterministic hash of each key value, the same for a parent's key and its children's
    foreign key whatever their integer width or string type."""
    keys = plain(keys)
    if pa.types.is_integer(keys.type):
        return splitmix64(keys.cast(pa.int64()).to_numpy(zero_copy_only=False).astype(np.uint64))
    return np.array([int.from_bytes(hashlib.blake2b(str(value).encode(), digest_size=8).digest(), "little")
                     for value in keys.to_pylist()], dtype=np.uint64)


def _family(arrow_type: pa.DataType) -> str:
    arrow_type = arrow_type.value_type if pa.types.is_dictionary(arrow_type) else arrow_type
    if pa.types.is_integer(arrow_type):
        return "integer"
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "string"
    return str(arrow_type)


def check_parent(parent: pa.Table, data: DataConfig) -> None:
    if data.key not in parent.column_names:
        raise UserError(f"data.key: {data.key!r} is not a column of {redact(data.path)}; its columns are: "
                        f"{', '.join(parent.column_names)}")
    keys = plain(parent.column(data.key))
    if _family(keys.type) not in ("integer", "string"):
        raise UserError(f"data.key: {data.key!r} is a {keys.type} column; a key must hold integers or strings")
    if keys.null_count:
        raise UserError(f"data.key: {data.key!r} is null in {keys.null_count:,} parent rows; every parent needs a key")
    counts = pa.table({"key": keys}).group_by("key").aggregate([([], "count_all")])
    repeated = counts.filter(pc.greater(counts.column("count_all"), 1))
    if repeated.num_rows:
        raise UserError(f"data.key: {data.key!r} repeats in {repeated.num_rows:,} keys (e.g. "
                        f"{repeated.column('key')[0].as_py()!r}, {repeated.column('count_all')[0].as_py()} rows); a "
                        "primary key must be unique")
    for name in [*data.conditions, *data.exclude]:
        if name == data.key:
            raise UserError(f"data.conditions/exclude: {data.key!r} is data.key; keys are never modelled as values")


def check_child(name: str, child: pa.Table, spec: ChildConfig, parent: pa.Table, data: DataConfig) -> None:
    where = f"data.children.{name}"
    for column in [spec.foreign_key, *spec.order_by, *spec.columns, *spec.exclude]:
        if column not in child.column_names:
            raise UserError(f"{where}: {column!r} is not a column of {redact(spec.path)}; its columns are: "
                            f"{', '.join(child.column_names)}")
    reserved = [c for c in child.column_names
                if c.startswith((PARENT_PREFIX, PREVIOUS_PREFIX)) or c in (POSITION, LENGTH)]
    if reserved:
        raise UserError(f"{where}: column {reserved[0]!r} uses a name linked tables reserve; rename it")
    if count_column(name) in parent.column_names:
        raise UserError(f"{where}: the parent table has a column {count_column(name)!r}, the name of this table's "
                        "child counts; rename it or the child table")
    fk, key = child.schema.field(spec.foreign_key).type, parent.schema.field(data.key).type
    if _family(fk) != _family(key):
        raise UserError(f"{where}.foreign_key: {spec.foreign_key!r} is {fk}, but it references {data.key!r}, which "
                        f"is {key}; cast one so both hold the same type")
    # the first order column places each row; later ones only break its ties, and their nulls sort last
    nulls = child.column(spec.order_by[0]).null_count if spec.order_by else 0
    if nulls:
        raise UserError(f"{where}.order_by: {spec.order_by[0]!r} is null in {nulls:,} rows; the first order column "
                        "needs a value in every row (fill it, or order by another column first)")


def child_counts(parent_keys: pa.Array, foreign_keys: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(count per parent row, parent row of each child row: -1 for a null key or a key no parent has)."""
    parent_index = pc.index_in(plain(foreign_keys).cast(pa.string()), plain(parent_keys).cast(pa.string()))
    index = parent_index.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    counts = np.bincount(index[index >= 0], minlength=len(parent_keys))
    return counts, index


def protected_context(column: pa.ChunkedArray | pa.Array, k: int) -> pa.Array | None:
    """A parent column as its children's context, with no value fewer than `k` training parents hold (value
    protection counts parents): rarer categories become null, numbers and times are clipped to the k-th smallest
    and largest. None for a column that cannot be a condition (lists, or nothing left after protection)."""
    column = plain(column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column)
    kind = column.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_boolean(kind):
        counts = pc.value_counts(column.drop_null())
        kept = counts.field("values").filter(pc.greater_equal(counts.field("counts"), k))
        if len(kept) == 0:
            return None
        return pc.if_else(pc.is_in(column, value_set=kept), column, pa.scalar(None, kind))
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_temporal(kind) or \
            pa.types.is_decimal(kind):
        present = column.drop_null()
        if len(present) < 2 * k:
            return None
        order = pc.array_sort_indices(present)
        low, high = present[order[k - 1].as_py()], present[order[len(present) - k].as_py()]
        return _clipped(column, low, high)
    return None


def derived_tables(config: Config) -> LinkedTables:
    """Read, check, split and derive; written once per source version under `<storage>/<train.name>.tables/`
    (a rerun of the same job reuses them, so the flat jobs resume; changed source files derive them again)."""
    data, k = config.data, config.encoder.min_value_count
    parent_fs, parent_files = parquet_files(data.path, data.storage_options)
    sources = {"parent": digest(parent_fs, parent_files)}
    for name, spec in data.children.items():
        fs, files = parquet_files(spec.path, spec.storage_options)
        sources[name] = digest(fs, files)
    storage_fs, storage = filesystem(absolute(config.train.storage_path), config.train.storage_options)
    folder = posixpath.join(storage.rstrip("/"), f"{config.train.name}.tables")
    identity = {"format": TABLES_FORMAT, "sources": sources, "data": data.model_dump(exclude={"storage_options"}),
                "seed": config.train.seed, "min_value_count": k}
    marker = posixpath.join(folder, "_tables.json")
    if storage_fs.exists(marker):
        with storage_fs.open(marker, "rb") as handle:
            saved = json.loads(handle.read())
        if saved["identity"] == json.loads(json.dumps(identity, default=str)):
            return _tables_from(saved, folder)
    tables = _derive(config, folder, storage_fs)
    with storage_fs.open(marker, "wb") as handle:
        handle.write(json.dumps({"identity": identity, "tables": _tables_record(tables)}, default=str).encode())
    return tables


def _tables_record(tables: LinkedTables) -> dict[str, Any]:
    return {"parent": tables.parent, "key": tables.key, "key_type": str(tables.key_type), "parents": tables.parents,
            "children": {name: layout.to_dict() for name, layout in tables.children.items()}}


def _tables_from(saved: dict[str, Any], folder: str) -> LinkedTables:
    record = saved["tables"]
    children = {name: ChildLayout.from_dict(layout) for name, layout in record["children"].items()}
    key_type = pa.int64() if "int" in record["key_type"] else pa.string()
    return LinkedTables(record["parent"], record["key"], key_type, folder, children, record["parents"])


def read_sources(config: Config) -> tuple[pa.Table, dict[str, pa.Table], np.ndarray]:
    """The parent table, each child table and which parents are held out (with all their children). A child
    table on the parent's own path is a panel: its parents are the entities its key names."""
    data = config.data
    read = {name: read_whole(spec.path, spec.storage_options, f"data.children.{name}.path")
            for name, spec in data.children.items()}
    panel = next((name for name, spec in data.children.items() if spec.path == data.path), None)
    if panel is not None:
        parent = pa.table({data.key: pc.unique(plain(read[panel].column(data.children[panel].foreign_key)
                                                    .combine_chunks()).drop_null())})
    else:
        parent = read_whole(data.path, data.storage_options, "data.path")
    if parent.num_rows == 0:
        raise UserError(f"data.path {redact(data.path)} holds an empty table (0 rows); point it at data with rows")
    check_parent(parent, data)
    holdout = in_holdout(key_hash(parent.column(data.key).combine_chunks()), config.train.seed,
                         data.holdout_fraction)
    return parent, read, holdout


def _derive(config: Config, folder: str, fs: Any) -> LinkedTables:
    data, k = config.data, config.encoder.min_value_count
    parent, read, holdout = read_sources(config)
    keys = parent.column(data.key).combine_chunks()
    splits = {"train": ~holdout, "holdout": holdout}
    parent_name = table_name(data.path)
    linked = {}
    for name, spec in data.children.items():
        child = read[name]
        check_child(name, child, spec, parent, data)
        counts, owner = child_counts(keys, child.column(spec.foreign_key))
        too_many = int(counts.max()) if len(counts) else 0
        if too_many > spec.max_children:
            raise UserError(f"data.children.{name}: a parent has {too_many:,} children, over "
                            f"data.children.{name}.max_children={spec.max_children:,}; raise it if that is a sequence "
                            "to learn, or check the foreign key")
        null_keys = child.column(spec.foreign_key).null_count
        left_out = {"null_foreign_key": null_keys, "no_such_parent": int((owner < 0).sum()) - null_keys}
        if sum(left_out.values()):
            console.warn(f"{name}: {left_out['no_such_parent']:,} rows name a {data.key} the parent table lacks and "
                         f"{null_keys:,} have none; they are left out of training (and counted in the manifest)")
        lifted = {}
        for column, values in lifted_columns(child, spec, owner, counts, splits["train"]).items():
            target = column if column not in parent.column_names else f"{name}.{column}"
            parent, lifted[column] = parent.append_column(target, values), target
        if lifted:
            console.progress(f"{name}: {', '.join(lifted)} hold one value per {data.key} in at least "
                             f"{LIFT_SHARE:.0%} of parents: modelled with the parent, shared by its {name}")
        linked[name] = (child, spec, counts, owner, left_out, lifted)
    train_index = pa.array(np.flatnonzero(splits["train"]))
    # every parent's value of each context column, protected as the training parents' values are (fitted once)
    references = {column: protected_context(parent.column(column).take(train_index), k)
                  for column in parent.column_names if column != data.key and column not in data.exclude}
    protected = {PARENT_PREFIX + column: _like(parent.column(column), reference)
                 for column, reference in references.items() if reference is not None}
    context = {derived: derived.removeprefix(PARENT_PREFIX) for derived in protected}
    derived: dict[str, dict[str, pa.Table]] = {split: {} for split in SPLITS}
    layouts = {}
    for name, (child, spec, counts, owner, left_out, lifted) in linked.items():
        own = child.drop_columns(list(lifted))
        training_rows = pa.array((owner >= 0) & splits["train"][np.maximum(owner, 0)])
        history = {column: protected_context(own.column(column).filter(training_rows), k)
                   for column in history_columns(own, spec)}
        history = {column: reference for column, reference in history.items() if reference is not None}
        for split, mask in splits.items():
            derived[split][name] = _child_rows(own, spec, owner, mask, protected, counts, history)
        layouts[name] = ChildLayout(name, spec.foreign_key, list(spec.order_by), child.schema, context, left_out,
                                    lifted, list(history))
    for split, mask in splits.items():
        rows = parent.filter(pa.array(mask))
        for name, (_, _, counts, *_) in linked.items():
            rows = rows.append_column(count_column(name), pa.array(counts[mask]))
        derived[split][parent_name] = rows
    for split, tables in derived.items():
        for table, rows in tables.items():
            path = posixpath.join(folder, split, f"{table}.parquet")
            fs.makedirs(posixpath.dirname(path), exist_ok=True)
            with fs.open(path, "wb") as handle:
                pq.write_table(rows, handle, compression="zstd")
    console.progress(f"linked tables: {parent_name} ({parent.num_rows:,} rows, {int(holdout.sum()):,} held out with "
                     f"their children) -> " + ", ".join(
                         f"{name} ({derived['train'][name].num_rows + derived['holdout'][name].num_rows:,} rows)"
                         for name in data.children))
    return LinkedTables(parent_name, data.key, plain(keys).type, folder, layouts,
                        {split: int(mask.sum()) for split, mask in splits.items()})


def lifted_columns(child: pa.Table, spec: ChildConfig, owner: np.ndarray, counts: np.ndarray,
                   training: np.ndarray) -> dict[str, pa.Array]:
    """Child columns that hold one value per parent (a plane's carrier, a man's ethnicity) in at least LIFT_SHARE
    of the training parents with two or more children: column -> each parent's most common value (null for a
    parent without children). Such a column is the parent's, not each child's: drawn per child, a plane's flights
    would change carrier from row to row."""
    several = training & (counts >= 2)
    if several.sum() < LIFT_MIN_PARENTS:
        return {}
    linked = owner >= 0
    lifted = {}
    for column in child.column_names:
        if column == spec.foreign_key or column in spec.order_by or column in spec.exclude:
            continue
        values = plain(child.column(column).combine_chunks()).filter(pa.array(linked))
        if pa.types.is_nested(values.type):
            continue
        pairs = pa.table({"owner": owner[linked], "value": values}).group_by(["owner", "value"]) \
            .aggregate([([], "count_all")])
        pair_owner = pairs.column("owner").to_numpy()
        distinct = np.bincount(pair_owner, minlength=len(counts))
        if (distinct[several] == 1).mean() < LIFT_SHARE:
            continue
        pairs = pairs.take(pc.sort_indices(pairs, sort_keys=[("owner", "ascending"), ("count_all", "descending")]))
        first_owner, first = np.unique(pairs.column("owner").to_numpy(), return_index=True)
        index = np.full(len(counts), -1, dtype=np.int64)
        index[first_owner] = first
        lifted[column] = pairs.column("value").take(pa.array(index, mask=index < 0)).combine_chunks()
    return lifted


def history_columns(child: pa.Table, spec: ChildConfig) -> list[str]:
    """The child columns whose value in the previous row of the sequence conditions the next row (a man's
    experience a year ago, a plane's last destination): every column but the foreign key, lists, columns declared
    identifiers or personal data, and text that nearly never repeats (ids, free text: no condition to learn).
    None without `order_by`: children in no particular order (a class's pupils) have no previous row, and drawing
    each from an arbitrary neighbour makes a random walk along the file's order (scores drifting up a class)."""
    if not spec.order_by:
        return []
    names = []
    for f in child.schema:
        declared = spec.columns.get(f.name)
        if f.name == spec.foreign_key or pa.types.is_nested(f.type) or \
                declared not in (None, "categorical", "integer", "continuous"):
            continue
        column = plain(child.column(f.name).combine_chunks())
        if (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)) and \
                pc.count_distinct(column).as_py() > HISTORY_MAX_DISTINCT_SHARE * len(column):
            continue
        names.append(f.name)
    return names


def _child_rows(child: pa.Table, spec: ChildConfig, owner: np.ndarray, parents: np.ndarray,
                context: dict[str, pa.Array], counts: np.ndarray, history: dict[str, pa.Array]) -> pa.Table:
    """The children of the parents in `parents` (a mask), in order within each parent, with their parent's
    protected columns (`context`: derived name -> every parent's value), position, sequence length and the previous row's (protected) values of the `history`
    columns (null in a sequence's first row); the foreign key left out."""
    rows = np.flatnonzero((owner >= 0) & parents[np.maximum(owner, 0)])
    table = child.take(pa.array(rows)).append_column("__owner", pa.array(owner[rows]))
    order = [("__owner", "ascending"), *[(column, "ascending") for column in spec.order_by]]
    table = table.take(pc.sort_indices(table, sort_keys=order))
    owners = table.column("__owner").to_numpy()
    starts = np.searchsorted(owners, owners, side="left")
    table = table.drop_columns(["__owner", spec.foreign_key])
    for derived, values in context.items():
        table = table.append_column(derived, values.take(pa.array(owners)))
    position = np.arange(len(owners)) - starts
    previous = pa.array(np.arange(len(owners)) - 1, mask=position == 0)
    for column, reference in history.items():
        table = table.append_column(PREVIOUS_PREFIX + column, _like(table.column(column), reference).take(previous))
    table = table.append_column(POSITION, pa.array(position, pa.int64()))
    return table.append_column(LENGTH, pa.array(counts[owners], pa.int64()))


def _like(values: pa.ChunkedArray, protected: pa.Array) -> pa.Array:
    """Every value of a column, protected as `protected` (fitted on the training rows) was."""
    values = plain(values.combine_chunks())
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type) or pa.types.is_boolean(values.type):
        kept = pc.unique(protected.drop_null())
        return pc.if_else(pc.is_in(values, value_set=kept), values, pa.scalar(None, values.type))
    return _clipped(values, pc.min(protected), pc.max(protected))


def _clipped(values: pa.Array, low: pa.Scalar, high: pa.Scalar) -> pa.Array:
    """`values` within [low, high]; times as their integer storage (no element-wise kernel takes time zones)."""
    if pa.types.is_temporal(values.type):
        storage = pa.int64() if values.type.bit_width == 64 else pa.int32()
        clipped = _clipped(values.cast(storage), low.cast(storage), high.cast(storage))
        return clipped.cast(values.type)
    return pc.min_element_wise(pc.max_element_wise(values, low), high)
