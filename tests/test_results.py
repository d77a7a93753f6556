"""docs/results.md sections: written, replaced in place, other sections kept, bad markers refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dfl_ray.results import Tee, cpu_model, record_output, write_section


def test_sections_are_appended_then_replaced_in_place(tmp_path: Path) -> None:
    doc = tmp_path / "docs" / "results.md"
    write_section("a", "first A", doc)
    write_section("b", "first B", doc)
    write_section("a", "second A\nwith two lines", doc)
    text = doc.read_text()
    assert text.startswith("# Measured results\n")
    assert "first A" not in text and "second A\nwith two lines" in text and "first B" in text
    assert text.index("second A") < text.index("first B")  # replaced where it stood


def test_hand_written_text_around_sections_is_kept(tmp_path: Path) -> None:
    doc = tmp_path / "results.md"
    doc.write_text("# Results\n\nIntro by hand.\n\n<!-- s:begin -->\nold\n<!-- s:end -->\n\nOutro.\n")
    write_section("s", "new", doc)
    assert doc.read_text() == "# Results\n\nIntro by hand.\n\n<!-- s:begin -->\nnew\n<!-- s:end -->\n\nOutro.\n"


@pytest.mark.parametrize("text", [
    "<!-- s:begin -->\nno end\n",
    "no begin\n<!-- s:end -->\n",
    "<!-- s:end -->\n<!-- s:begin -->\n",
    "<!-- s:begin -->\n<!-- s:end -->\n<!-- s:begin -->\n<!-- s:end -->\n",
])
def test_invalid_markers_are_refused_and_the_file_kept(tmp_path: Path, text: str) -> None:
    doc = tmp_path / "results.md"
    doc.write_text(text)
    with pytest.raises(ValueError, match="unbalanced"):
        write_section("s", "new", doc)
    assert doc.read_text() == text


def test_invalid_section_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="section name"):
        write_section("a b", "x", tmp_path / "r.md")


def test_record_output_names_the_command_and_keeps_the_output(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    with Tee() as tee:
        print("ratio 1.02")
    assert capsys.readouterr().out == "ratio 1.02\n"  # still printed
    doc = record_output("bench", "A bench", tee.text, argv=["benchmarks/x.py", "--repeat", "3"],
                        path=tmp_path / "r.md")
    text = doc.read_text()
    assert "## A bench" in text and "`python benchmarks/x.py --repeat 3`" in text
    assert "```\nratio 1.02\n```" in text
    assert f"numpy {np.__version__}" in text  # the versions it was measured with
    import torch  # and the processor, whose vector kernels change the sums

    assert f"({cpu_model()}, torch kernels {torch.backends.cpu.get_cpu_capability()})" in text


def test_cpu_model_is_read_from_cpuinfo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t:\nmodel name\t: Example CPU 9000 @ 3.0GHz\n"
                       "flags\t\t: fpu avx2\n\nprocessor\t: 1\nmodel name\t: Other\n")
    assert cpu_model(cpuinfo) == "Example CPU 9000 @ 3.0GHz"  # the first one that names a model
    monkeypatch.setattr("platform.processor", lambda: "x86_64")
    assert cpu_model(tmp_path / "absent") == "x86_64"  # no cpuinfo: what platform says
    monkeypatch.setattr("platform.processor", lambda: "")
    assert cpu_model(tmp_path / "absent") == "unknown"
