"""initlab.grading.markers: the one reader of Otter Assign's solution markers."""

import doctest

import nbformat

import initlab.grading.markers as markers
from initlab.grading.markers import fence, solution_cells, solution_lines, solution_split


def _master() -> nbformat.NotebookNode:
    v4 = nbformat.v4
    return v4.new_notebook(
        cells=[
            v4.new_code_cell("setup_value = compute_setup()  # SOLUTION"),  # outside fences
            v4.new_raw_cell("# BEGIN SOLUTION"),
            v4.new_code_cell(
                "def double(x):\n    # BEGIN SOLUTION\n    return 2 * x\n    # END SOLUTION"
            ),
            v4.new_code_cell("answer = double(21)  # SOLUTION\nprint(answer)"),
            v4.new_markdown_cell("prose"),
            v4.new_raw_cell("# END SOLUTION"),
            v4.new_code_cell("unrelated = 1"),
        ]
    )


def test_solution_split_marks_block_and_suffix_lines_and_drops_markers() -> None:
    src = "def f(x):\n    # BEGIN SOLUTION\n    y = x  # SOLUTION\n    return y\n    # END SOLUTION"
    assert solution_split(src) == [
        ("def f(x):", False),
        ("    y = x", True),
        ("    return y", True),
    ]
    assert solution_split("a = 1  # SOLUTION\nb = 2") == [("a = 1", True), ("b = 2", False)]


def test_fence_reads_raw_cells_only() -> None:
    v4 = nbformat.v4
    assert fence(v4.new_raw_cell("# BEGIN SOLUTION")) == "begin"
    assert fence(v4.new_raw_cell("  # END SOLUTION\n")) == "end"
    assert fence(v4.new_code_cell("# BEGIN SOLUTION")) is None
    assert fence(v4.new_raw_cell("# BEGIN TESTS")) is None


def test_solution_cells_are_the_fenced_code_cells_without_markers() -> None:
    assert solution_cells(_master()) == [
        "def double(x):\n    return 2 * x",
        "answer = double(21)\nprint(answer)",
    ]


def test_solution_lines_are_what_otter_removes_and_long_enough_to_prove_a_leak() -> None:
    # "return 2 * x" and the suffixed lines; not "print(answer)" (kept for the student)
    # and not lines of 8 characters or fewer.
    assert solution_lines(_master()) == {
        "return 2 * x",
        "answer = double(21)",
        "setup_value = compute_setup()",
    }


def test_module_example() -> None:
    assert doctest.testmod(markers).failed == 0
