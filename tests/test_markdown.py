"""The one markdown-table writer."""

import pytest

from mitp.markdown import table


def test_a_table_has_a_header_a_rule_and_one_line_per_row():
    text = table(["method", "accuracy"], [["mitp", "0.8300"], ["late_fusion", "0.8200"]])
    assert text == ("| method | accuracy |\n|---|---:|\n| mitp | 0.8300 |\n| late_fusion | 0.8200 |\n")


def test_alignment_per_column_and_cells_that_cannot_break_the_row():
    text = table(["a", "b", "c"], [["x|y", "line\nbreak", 3]], align="lrl")
    assert text.splitlines()[1] == "|---|---:|---|"
    assert text.splitlines()[2] == "| x\\|y | line break | 3 |"


@pytest.mark.parametrize(("rows", "align"), [([["only one"]], None), ([["a", "b"]], "lx"), ([["a", "b"]], "l")])
def test_a_row_or_an_alignment_that_does_not_fit_the_header_is_refused(rows, align):
    with pytest.raises(ValueError):
        table(["a", "b"], rows, align)
