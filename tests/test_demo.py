"""The bundled demo writes everything it promises, and its students beat each teacher."""

from __future__ import annotations

import json

import amalgamator as am
from amalgamator.demo import run_demo


def test_quick_demo_writes_student_report_plot_and_recipe(tmp_path):
    rows = run_demo(tmp_path, quick=True)
    for name in ("student/model.safetensors", "student/student.json", "report.md", "confusion.png", "recipe.yaml"):
        assert (tmp_path / name).exists(), name
    acc = {k: v["metrics"]["accuracy"] for k, v in rows.items()}
    best_teacher = max(v for k, v in acc.items() if k.startswith("teacher"))
    assert best_teacher < 0.6  # a teacher knows only half the classes
    assert acc["uhc"] > best_teacher + 0.15 and acc["kd"] > best_teacher + 0.15
    assert acc["supervised (upper bound)"] > max(acc["kd"], acc["uhc"])
    report = (tmp_path / "report.md").read_text()
    assert "| uhc |" in report and "supervised (upper bound)" in report
    saved = json.loads((tmp_path / "results.json").read_text())
    assert set(saved) == set(rows)
    student = am.load_student(tmp_path / "student")
    assert student.labels == [str(i) for i in range(10)]
