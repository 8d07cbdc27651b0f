"""Committed results stay true: docs/results.md is exactly what results/*.json generate, and `make claims`'s
verdict comparison catches a changed verdict."""
import json

from widgets.notebooks import committed_results_markdown
from workbench.claims import REPO, Claims, load_results, verdict_differences, write_results


def test_docs_results_md_is_generated_from_the_committed_results():
    text = (REPO / "docs" / "results.md").read_text(encoding="utf-8")
    assert text == committed_results_markdown(), \
        "docs/results.md is out of date: run `python -m widgets.notebooks results --committed`"


def test_committed_results_are_full_size_and_evaluated():
    for doc in load_results():
        assert doc["size"] == "full", doc["notebook"]
        assert doc["claims"] and all(c["status"] != "not_evaluated" for c in doc["claims"]), doc["notebook"]


def _run(tmp, name, verdicts):
    c = Claims("full", echo=None)
    for text, holds in verdicts.items():
        c(text, holds)
    c.check("an identity", True)
    write_results(tmp / name, name, "full", {"x": 1}, c)


def test_verdict_differences_finds_a_flipped_verdict_and_a_missing_run(tmp_path):
    committed, fresh = tmp_path / "committed", tmp_path / "fresh"
    committed.mkdir()
    _run(tmp_path / "c", "nb_a", {"A holds": True, "B holds": False})
    _run(tmp_path / "c", "nb_b", {"C holds": None})
    for nb in ("nb_a", "nb_b"):
        (committed / f"{nb}.json").write_text((tmp_path / "c" / nb / "results.json").read_text())
    _run(fresh, "nb_a", {"A holds": True, "B holds": False})
    assert verdict_differences(fresh, committed) == [f"nb_b: no fresh results.json at {fresh / 'nb_b' / 'results.json'}"]
    _run(fresh, "nb_b", {"C holds": True})
    diffs = verdict_differences(fresh, committed)
    assert diffs == ["nb_b: 'C holds': committed not_measured, fresh shown"]
    doc = json.loads((fresh / "nb_a" / "results.json").read_text())
    assert doc["checks"] == [{"text": "an identity", "holds": True, "status": "check_passed", "evidence": {}}]
    assert len(doc["claims"]) == 2                       # checks are not counted among the claims
