"""Which input files a job type takes, and of which kinds (``FILE_FIELDS``)."""

from __future__ import annotations

from commands.errors import UnsupportedMediaType, invalid
from commands.job_parameters import FILE_FIELDS

#: Every file field of any job type.
ALL_FILE_FIELDS = frozenset(f for fields in FILE_FIELDS.values() for f in fields)


def check_file(job_type: str | None, field: str, content_type: str | None = None) -> None:
    """Refuse a file field the job type does not take (InvalidCommand), or a sniffed
    ``content_type`` (``audio/wav``) that does not fit the field (UnsupportedMediaType).
    With ``job_type`` unknown (``None``: not sent yet) only the field's name is checked."""
    accepted = FILE_FIELDS.get(job_type or "")
    if field not in (ALL_FILE_FIELDS if accepted is None else accepted):
        what = f"a {job_type} job takes" if accepted is not None else "there is"
        raise invalid(field, f"{what} no file {field!r}")
    kinds = (accepted or {}).get(field, ())
    if content_type is not None and kinds and content_type.split("/")[0] not in kinds:
        raise UnsupportedMediaType(f"{field} is {content_type}; a {job_type} job takes {' or '.join(kinds)} there")
