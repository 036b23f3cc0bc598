"""Limits and validators for the text values of a request (ids, labels, column names)."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, Field, StringConstraints

#: Values one filter field may list: SQLite answers a few hundred terms per query at most.
MAX_FILTER_VALUES = 100
#: Characters in one text value of a request (ids, labels, column names, filter values).
MAX_TEXT = 512


def unicode_text(value: str) -> str:
    """``value`` if it is valid Unicode text (JSON allows lone UTF-16 surrogates, which no
    store, file or UTF-8 encoder accepts)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("contains a lone UTF-16 surrogate (not valid Unicode text)") from None
    return value


#: A text value of a request: valid Unicode, at most :data:`MAX_TEXT` characters.
Text = Annotated[str, StringConstraints(max_length=MAX_TEXT), AfterValidator(unicode_text)]
#: One filter field: a value, or a non-empty list of at most :data:`MAX_FILTER_VALUES`.
FilterValues = Annotated[
    list[Text],
    BeforeValidator(
        lambda value: [value] if isinstance(value, str) else value,
        json_schema_input_type=str | list[str],
    ),
    Field(min_length=1, max_length=MAX_FILTER_VALUES),
]
