"""Column codecs: Arrow tables <-> the model's float32 matrices, fitted from streaming sketches of the training
split only, and safe by default: nothing a codec stores lets a single person's value out
(`encoder.min_value_count` = k).

One file per concern; data flows down this list:
- arrow.py       Arrow types and casts (numbers, dates, times, decimals as one numeric storage)
- kinds.py       column kinds from Arrow types or `data.columns`, and `Span` (where a codec's output lives)
- counts.py      bounded value counts, mergeable
- id_formats.py  what string ids look like (shared prefix, templates), to write fresh ones
- sketches.py    one-pass mergeable sketches of a numeric or category column
- base.py        the contract every codec keeps (fit, encode, decode, to_dict / from_dict, spans)
- text_formats.py dates, times, timestamps and numbers written in strings: candidate formats, checked on every
                 value (a format counts a value only if it writes it back the same), and their sketch
- numeric.py, categorical.py, identifier.py, formatted.py: the codecs, one per column kind family
- registry.py    codecs by kind: the one place naming every codec class
- calendar.py    calendar phases of date and timestamp conditions
- private.py     the steps of a fit from noisy counts (`train.privacy`)
- table.py       `TableEncoder`: the fitted columns together, and the encoder's JSON file format
- fit.py         `EncoderSketch` (the streaming fit) and `fit_table` (the same in one process)

Under `train.privacy` every statistic is fitted from noisy counts instead (pipeline/privacy.py): categories and
condition combinations need a noisy count above a threshold, numbers get private bounds and quantiles,
identifiers are recognised by name alone, and fresh ids no longer depend on training values.
"""
from pipeline.codec.arrow import numeric_storage, plain
from pipeline.codec.base import Codec, DecodeContext, FitSettings
from pipeline.codec.categorical import PROTECTED_TOKEN
from pipeline.codec.fit import EncoderSketch, fit_table
from pipeline.codec.id_formats import id_skeletons
from pipeline.codec.kinds import KINDS, NUMERIC_KINDS, Span, infer_kind
from pipeline.codec.private import FineHistograms
from pipeline.codec.registry import codec_class
from pipeline.codec.table import TableEncoder

__all__ = ["Codec", "DecodeContext", "EncoderSketch", "FineHistograms", "FitSettings", "KINDS", "NUMERIC_KINDS",
           "PROTECTED_TOKEN", "Span", "TableEncoder", "codec_class", "fit_table", "id_skeletons", "infer_kind",
           "numeric_storage", "plain"]
