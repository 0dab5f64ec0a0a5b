"""Quoting for the SQL the stages build for DuckDB (names and values from the registry or configuration).

Values that come from data are passed as parameters; these are for what
DuckDB cannot take as a parameter (identifiers, paths in ``read_parquet``, DDL).
"""


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
