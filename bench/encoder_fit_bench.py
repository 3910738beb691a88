"""Encoder fit cost per bundled table: the sketch `cvae train` streams over the training split, on ~1M rows of each
table (the table repeated), beside the same fit with the id format work switched off (IdShape and IdTemplates,
what string columns that may be identifiers record), beside the fit without typed strings (`encoder.typed_strings`
false: no search for dates, times, numbers or personal data in strings) and beside one Arrow `value_counts` per
column over the same batches (a floor: the sketch counts at least that), in one run.

    python bench/encoder_fit_bench.py [--tables pizzaplace nuclides ...] [--rows 1000000] [--repeats 2]

One process, one thread per fit (the encoder fit runs per Ray Data block); min of --repeats fits. Nothing here is
a test.
"""
from __future__ import annotations

import argparse
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.codec import id_formats
from pipeline.config import EncoderConfig
from pipeline.codec import fit_table

from in_process import fastest  # noqa: E402 (bench/)
from judging import CONDITIONS  # noqa: E402 (bench/): each table's natural condition column

DATA = Path(__file__).resolve().parents[1] / "pipeline" / "data"
BATCH_ROWS = 100_000


@contextmanager
def without_id_formats():
    """The fit as it was before ids were written like the training ids: no shape, no templates recorded."""
    shape, templates = id_formats.IdShape.update, id_formats.IdTemplates.update
    id_formats.IdShape.update = id_formats.IdTemplates.update = lambda self, *block: None
    try:
        yield
    finally:
        id_formats.IdShape.update, id_formats.IdTemplates.update = shape, templates


def repeated(table: pa.Table, conditions: list[str], rows: int) -> tuple[pa.Table, list[str]]:
    """The table repeated to about `rows` rows, and its identifier columns, kept unique: copy i appends i to a string
    id (`2015-017257` -> `2015-0172573`, same format) and shifts an integer id past the last copy's."""
    ids = [name for name, kind in fit_table(table.to_batches(), conditions, EncoderConfig()).kinds().items()
           if kind == "id"]
    copies = []
    for i in range(max(1, round(rows / table.num_rows))):
        copy = table
        for name in ids if i else []:
            column = copy.column(name)
            if pa.types.is_integer(column.type):
                unique = pc.add(column, pa.scalar(i * (pc.max(column).as_py() + 1), column.type))
            else:
                unique = pc.binary_join_element_wise(column.cast(pa.string()), pa.scalar(str(i)), "").cast(column.type)
            copy = copy.set_column(copy.schema.get_field_index(name), name, unique)
        copies.append(copy)
    return pa.concat_tables(copies), ids


def flat(column: pa.Array) -> pa.Array:
    """A list column's elements (digits' 64 pixels), what its sketch counts; any other column as it is."""
    return pc.list_flatten(column) if pa.types.is_list(column.type) or pa.types.is_fixed_size_list(column.type) \
        else column


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", nargs="+", default=list(CONDITIONS))
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    print("| table | rows | id columns | fit s | rows/s | without id formats s | cost of id formats "
          "| without typed strings s | cost of typed strings | Arrow value_counts per column s (floor) | fit / floor |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in args.tables:
        table, ids = repeated(pq.read_table(DATA / f"{name}.parquet"), CONDITIONS.get(name, []), args.rows)
        batches = table.combine_chunks().to_batches(max_chunksize=BATCH_ROWS)  # blocks of BATCH_ROWS, as Ray Data's

        def fit(config=EncoderConfig()):
            return fit_table(batches, CONDITIONS.get(name, []), config, None)

        with_formats = fastest(fit, args.repeats)
        with without_id_formats():
            plain = fastest(fit, args.repeats)
        untyped = fastest(lambda: fit(EncoderConfig(typed_strings=False)), args.repeats)
        floor = fastest(lambda: [pc.value_counts(flat(batch.column(i))) for batch in batches
                                 for i in range(batch.num_columns)], args.repeats)
        print(f"| {name} | {table.num_rows:,} | {', '.join(ids) or '-'} | {with_formats:.2f} | "
              f"{table.num_rows / with_formats:,.0f} | {plain:.2f} | {with_formats / plain:.2f}x | {untyped:.2f} | "
              f"{with_formats / untyped:.2f}x | {floor:.2f} | "
              f"{with_formats / floor:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
