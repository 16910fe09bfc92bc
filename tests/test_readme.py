"""The README stays true: its op table is the list of ops the tests check."""
from tests.op_specs import markdown_table, readme_table


def test_readme_op_table_matches_the_tested_ops():
    assert readme_table() == markdown_table(), "README op table is stale: run `python -m tests.op_specs --update`"


def test_readme_learner_example_is_the_example_file():
    import pathlib
    import textwrap
    root = pathlib.Path(__file__).resolve().parents[1]
    source = (root / "examples" / "01_learner_tour.py").read_text()
    block = textwrap.dedent(source.split("# README:start\n")[1].split("    # README:end")[0]).strip()
    readme = (root / "README.md").read_text()
    assert "```python\n" + block + "\n```" in readme, "README's Learner example differs from examples/01_learner_tour.py"
