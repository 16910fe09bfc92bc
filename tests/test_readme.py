"""The README stays true: its op table is the list of ops the tests check."""
from tests.op_specs import markdown_table, readme_table


def test_readme_op_table_matches_the_tested_ops():
    assert readme_table() == markdown_table(), "README op table is stale: run `python -m tests.op_specs --update`"
