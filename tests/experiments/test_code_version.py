"""The code hashes recorded in every run move with what the code does, not with its wording."""

from __future__ import annotations

from experiments import code_version as CV
from experiments.run import main
from tests.conftest import TINY


def test_comments_docstrings_and_formatting_leave_the_hash_and_code_moves_it(tmp_path, monkeypatch):
    monkeypatch.setattr(CV, "ROOT", tmp_path)
    path = tmp_path / "m.py"
    path.write_text('"""Doc."""\n\ndef f(x):\n    """What f does."""\n    return x + 1  # why\n')
    before = CV.source_hash([path])
    path.write_text('"""Other words."""\ndef f(x):\n    return (x + 1)\n')
    assert CV.source_hash([path]) == before
    path.write_text('"""Doc."""\ndef f(x):\n    return x + 2\n')
    assert CV.source_hash([path]) != before


def test_every_listed_module_exists_and_a_run_records_the_hashes(make_cfg):
    assert all(p.exists() for p in CV._files(CV.TRAINING + CV.MEASURING))
    result = main(make_cfg(*TINY, "progress=false"))
    assert result["code"] == CV.code_hashes()
    assert all(len(h) == 12 for h in result["code"].values())
