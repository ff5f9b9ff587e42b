"""Warnings reach the user as one line each ("gsimclr: warning: ..."), without the source line of the
code that warned, and a warning met by several stages (a skipped file) is printed once."""

from __future__ import annotations

import sys
import warnings

import pytest
from image_folders import jpeg_folder

from gsimclr.cli import main
from gsimclr.errors import one_line_warning, one_line_warnings


def _print_warnings(monkeypatch):
    """Warnings printed to stderr through ``warnings.formatwarning``, as outside pytest's recorder."""

    def show(message, category, filename, lineno, file=None, line=None):
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))

    monkeypatch.setattr(warnings, "showwarning", show)


def test_warnings_are_one_line_and_each_distinct_one_is_printed_once(capsys, monkeypatch):
    with warnings.catch_warnings():
        warnings.resetwarnings()
        _print_warnings(monkeypatch)
        restore = one_line_warnings()
        try:
            for _ in range(3):
                warnings.warn("skipped 1 unreadable image(s) in set\n(train)", stacklevel=1)
            warnings.warn("another", stacklevel=1)
        finally:
            restore()
    err = capsys.readouterr().err
    assert err == "gsimclr: warning: skipped 1 unreadable image(s) in set (train)\ngsimclr: warning: another\n"
    assert warnings.formatwarning is not one_line_warning


def test_a_warning_raised_from_two_modules_is_printed_once(capsys, monkeypatch):
    """CPython's C ``warnings`` keeps the "once" filter per module that warned (its registry): the same
    message reached through two callers (a stacklevel into two modules) must still print once."""
    with warnings.catch_warnings():
        warnings.resetwarnings()
        _print_warnings(monkeypatch)
        restore = one_line_warnings()
        try:
            for module in ("gsimclr.pipeline", "gsimclr.export", "gsimclr.pipeline"):
                warnings.warn_explicit("left out 1 image(s) lying in x", UserWarning, f"{module}.py", 7,
                                       module=module, registry=sys.modules.setdefault(f"_registry_{module}", {}))
        finally:
            restore()
    assert capsys.readouterr().err == "gsimclr: warning: left out 1 image(s) lying in x\n"


def test_the_cli_prints_a_skipped_symlink_and_left_out_images_once(tmp_path, monkeypatch, capsys):
    root = jpeg_folder(tmp_path / "set", count=8)
    (root / "train" / "c0" / "dangling.jpg").symlink_to(tmp_path / "nowhere.jpg")
    (root / "train" / "c0" / "000.jpg").rename(root / "train" / "loose.jpg")      # beside the class folders
    monkeypatch.setenv("GSIMCLR_CACHE", str(tmp_path / "cache"))
    with warnings.catch_warnings():
        warnings.resetwarnings()
        _print_warnings(monkeypatch)
        assert main(["pretrain", "--data", str(root), "--image-size", "16", "--n-blocks", "0", "--head-dims", "16,8",
                     "--epochs", "1", "--batch-size", "4", "--device", "cpu", "--out", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    for what in ("skipped 1 dangling or looping symlink(s)", "left out 1 image(s)"):
        assert len([line for line in err.splitlines() if what in line]) == 1, err


@pytest.mark.parametrize("store", ["memory", "jpeg"])
def test_the_cli_prints_a_skipped_file_once_without_source_lines(tmp_path, monkeypatch, capsys, store):
    root = jpeg_folder(tmp_path / "set", count=8)
    (root / "train" / "c0" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(50))
    monkeypatch.setenv("GSIMCLR_CACHE", str(tmp_path / "cache"))
    with warnings.catch_warnings():
        warnings.resetwarnings()
        _print_warnings(monkeypatch)
        assert main(["pretrain", "--data", str(root), "--store", store, "--image-size", "16", "--n-blocks", "0",
                     "--head-dims", "16,8", "--epochs", "1", "--batch-size", "4", "--device", "cpu",
                     "--monitor-every", "0", "--out", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "skipped" in line]
    assert len(lines) == 1 and lines[0].startswith("gsimclr: warning: skipped 1 unreadable"), err
    assert "UserWarning" not in err and ".py:" not in err
