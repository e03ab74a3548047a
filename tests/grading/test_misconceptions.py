"""Misconceptions get the score and the message they should, and no message gives the answer.

Each fixture in ``fixtures/misconceptions/<set>/`` is one typical wrong answer (format in
``_misconceptions.py`` and issue 15). For each, the solved student notebook with the fixture
applied is executed in-process and graded with the set's otter test files, as the grader does.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _misconceptions import SetRun, fixture_sets, run_set

SETS = sorted(fixture_sets())
# Text that no failed-test message of a question may contain: its expected answers, in the
# forms a message would print them (fixtures may add more with '# secret:' lines).
SECRETS: dict[str, dict[str, list[str]]] = {
    "01_stabilising_training": {
        "q1": ["0.25", "1/4"],
        "q2": ["(n * sigma**2) ** k", "n * sigma**2"],
        "q6": ["digamma(n / 2)"],
        "q7": ["-6.7", "-6.8"],
    },
    "02_variance_derivation": {
        "q1": ["n_in * sigma2 * gamma2"],
        "q2": ["n_out * sigma2 * grad_var", "1.92"],
        "q3": ["should be 'LeCun'", "should be 'He'", "1 / (3 * fan_in)", "1/(3"],
        "q4": ["0.5 *", "1/6", "0.1667", "2 / n_in", "0.02"],
        "q6": ["-7.0", "-6.9", "-7.1"],
    },
    "03_xavier": {
        "q1": ["sqrt(2 / (n_in + n_out))", "(2.0 / (n_in + n_out)) ** 0.5"],
        "q2": ["0.333", "1/3", "1 / 3", "sqrt(6", "6.0 /"],
        "q3": ["sqrt(6"],
        "q4": ["1 / sqrt(width)", "0.0625"],
        "q5": ["0.4", "1.6", "1.5 ", "2 * n_out"],
        "q6": ["-9.0", "-9.1", "-9.2"],
    },
}


@pytest.fixture(scope="module", params=SETS)
def graded(request: pytest.FixtureRequest, built: Path) -> tuple[str, SetRun]:
    return request.param, run_set(request.param, built)


def test_every_set_has_three_misconceptions() -> None:
    short = {s: len(paths) for s, paths in fixture_sets().items() if len(paths) < 3}
    assert not short, f"sets with fewer than 3 misconception fixtures: {short}"


def test_solutions_score_full_marks(graded: tuple[str, SetRun]) -> None:
    chapter, run = graded
    assert not run.baseline_errors, run.baseline_errors
    lost = {
        q: (r.score, r.possible, r.failed_public + r.failed_hidden)
        for q, r in run.baseline.items()
        if r.score != r.possible
    }
    assert not lost, f"{chapter}: the master's answers lose points: {lost}"


def test_each_misconception_gets_its_score_and_message(graded: tuple[str, SetRun]) -> None:
    chapter, run = graded
    problems = []
    for name, (fx, results, _errors) in sorted(run.fixtures.items()):
        res = results[fx.question]
        if (res.score, res.possible) != (fx.score, fx.possible):
            problems.append(
                f"{name}: {fx.question} scored {res.score:g} of {res.possible:g}, expected "
                f"{fx.score:g} of {fx.possible:g}; public failures: {res.failed_public}"
            )
        others = {
            q: r.score for q, r in results.items() if q != fx.question and r.score != r.possible
        }
        if others:
            problems.append(f"{name}: other questions lost points: {others}")
        for message in fx.messages:
            if message == "(hidden only)":
                if res.failed_public:
                    problems.append(f"{name}: expected no public failure, got {res.failed_public}")
            elif not any(message in m for m in res.failed_public):
                problems.append(
                    f"{name}: no failed public test of {fx.question} says {message!r}: "
                    f"{res.failed_public}"
                )
        # A secret that the fixture's own code contains is the learner's value echoed back.
        own = fx.path.read_text(encoding="utf-8")
        secrets = [
            s for s in SECRETS.get(chapter, {}).get(fx.question, []) + fx.secrets if s not in own
        ]
        for m in res.failed_public:
            leaked = [s for s in secrets if s in m.split("\n")[-1]]
            if leaked:
                problems.append(f"{name}: a message gives away {leaked}: {m!r}")
    assert not problems, "\n".join(problems)
