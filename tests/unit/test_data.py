"""Loading TSV files: bad files fail clearly, bad rows are counted and skipped."""

from pathlib import Path

import pytest

from tagloop.domain.data import DataError, load_labeled, load_titles


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "data.tsv"
    path.write_text(text, encoding="utf-8")
    return path


def test_project_files_load_with_their_documented_sizes():
    data = load_labeled(Path("data/train.tsv"))
    assert len(data) + sum(data.skipped.values()) == 18_000
    assert len({tag for tags in data.tags for tag in tags}) == 100
    assert len(load_titles(Path("data/unlabeled.tsv"))) == 20_000


def test_bad_rows_are_skipped_and_counted(tmp_path):
    path = write(
        tmp_path,
        "title\ttags\n"
        "Good title\t['python']\n"
        "\t['python']\n"
        "Unparsable tags\t['python'\n"
        "Not a list\t'python'\n"
        "No tags\t[]\n"
        "Invalid tag\t['bad tag!']\n"
        "Code in cell\t__import__('os').system('true')\n"
        "Good title\t['python']\n"
        '"A ""quoted"" title"\t[\'C#\', \'JS\']\n',
    )
    data = load_labeled(path)
    assert data.titles == ["Good title", 'A "quoted" title']
    assert data.tags == [["python"], ["c#", "javascript"]]
    assert data.skipped == {"empty_title": 1, "bad_tags": 4, "no_tags": 1, "duplicate": 1}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("title\tlabels\nx\t['a']\n", "missing column"),
        ("title\ttags\n\t['python']\n", "no valid rows"),
        ("", "not a readable"),
    ],
)
def test_unusable_files_raise_a_clear_error(tmp_path, text, message):
    with pytest.raises(DataError, match=message):
        load_labeled(write(tmp_path, text))


def test_missing_file_and_binary_file(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_labeled(tmp_path / "absent.tsv")
    binary = tmp_path / "binary.tsv"
    binary.write_bytes(b"title\ttags\n\xff\xfe\x00\x81\t['a']\n")
    with pytest.raises(DataError, match="not a readable"):
        load_labeled(binary)
