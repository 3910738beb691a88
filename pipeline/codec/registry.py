"""Codecs found by column kind: the one place that names every codec class. A new column kind is a Codec subclass
in a file of its own and one line here."""
from __future__ import annotations

from typing import Any

import pyarrow as pa

from pipeline.codec.base import Codec
from pipeline.codec.categorical import CategoricalCodec
from pipeline.codec.clock import ClockCodec
from pipeline.codec.formatted import FormattedCodec
from pipeline.codec.identifier import IdCodec
from pipeline.codec.numeric import NumericCodec
from pipeline.codec.personal import PersonalCodec

CODECS: dict[str, type[Codec]] = {kind: cls for cls in (NumericCodec, CategoricalCodec, IdCodec, FormattedCodec,
                                                            PersonalCodec, ClockCodec) for kind in cls.kinds}


def codec_class(kind: str) -> type[Codec]:
    return CODECS[kind]


def codec_from_dict(field: pa.Field, spec: dict[str, Any]) -> Codec:
    """A saved codec; its "kind" picks the class (KeyError for one this version lacks, reported as malformed)."""
    return CODECS[spec["kind"]].from_dict(field, spec)
