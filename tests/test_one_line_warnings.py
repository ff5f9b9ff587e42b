"""Warnings reach the user as one line each ("gsimclr: warning: ..."), without the source line of the
code that warned, and a warning met by several stages (a skipped file) is printed once."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

from image_folders import jpeg_folder

from gsimclr.errors import one_line_warnings


def test_warnings_are_one_line_and_each_distinct_one_is_printed_once(capsys, monkeypatch):
    def show(message, category, filename, lineno, file=None, line=None):  # Python's, outside pytest's recorder
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))

    with warnings.catch_warnings():
        warnings.resetwarnings()
        monkeypatch.setattr(warnings, "showwarning", show)
        restore = one_line_warnings()
        try:
            for _ in range(3):
                warnings.warn("skipped 1 unreadable image(s) in set\n(train)", stacklevel=1)
            warnings.warn("another", stacklevel=1)
        finally:
            restore()
    err = capsys.readouterr().err
    assert err == "gsimclr: warning: skipped 1 unreadable image(s) in set (train)\ngsimclr: warning: another\n"
    assert warnings.formatwarning is not None and "once" not in [f[0] for f in warnings.filters[:1]]


def test_the_cli_prints_a_skipped_file_once_without_source_lines(tmp_path):
    root = jpeg_folder(tmp_path / "set", count=8)
    (root / "train" / "c0" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(50))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"), "OMP_NUM_THREADS": "1",
           "GSIMCLR_CACHE": str(tmp_path / "cache")}
    for store in ("memory", "jpeg"):
        done = subprocess.run([sys.executable, "-m", "gsimclr", "pretrain", "--data", str(root), "--store", store,
                               "--image-size", "16", "--n-blocks", "0", "--head-dims", "16,8", "--epochs", "1",
                               "--batch-size", "4", "--device", "cpu", "--monitor-every", "0",
                               "--out", str(tmp_path / store)], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        lines = [line for line in done.stderr.splitlines() if "skipped" in line]
        assert len(lines) == 1 and lines[0].startswith("gsimclr: warning: skipped 1 unreadable"), done.stderr
        assert "UserWarning" not in done.stderr and ".py:" not in done.stderr
