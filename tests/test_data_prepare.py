"""experiments.prepare: statistics as text and as one JSON object (run as a subprocess)."""

import json
import subprocess
import sys

from experiments import prepare


def test_prepare_json_and_text(tmp_path):
    folder = tmp_path / "ml-100k"
    folder.mkdir()
    rows = [(u, i, 4, u * 10 + i) for u in range(1, 5) for i in range(1, 7) if (u + i) % 3]
    (folder / "u.data").write_text("".join("\t".join(map(str, r)) + "\n" for r in rows))
    command = [
        sys.executable,
        "-m",
        "experiments.prepare",
        "--dataset=ml-100k",
        f"--data_dir={tmp_path}",
        "--num_test_negatives=2",
        "--json",
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    stats = json.loads(result.stdout)
    assert stats["users"] == 4 and stats["items"] == 6 and stats["interactions"] == len(rows)
    assert stats["train_interactions"] == len(rows) - 4
    assert stats["test_users"] == 4 and stats["test_negatives_per_user"] == 2
    text = prepare.format_stats({"users": 6040, "density": 0.5, "dataset": "x"})
    assert text.splitlines() == ["users    6,040", "density  0.500000", "dataset  x"]
