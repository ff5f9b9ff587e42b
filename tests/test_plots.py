"""The pictures a run writes read at a glance: they name their run, data and method, key their colours to
names (class names on t-SNE maps), and keep their legends off the data."""

import numpy as np
import pytest
import yaml

from gsimclr.plots import MAX_LEGEND_CLASSES, context_line, curves_figure, plot_curves, plot_tsne, tsne_figure


def _texts(fig):
    return [t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text") and callable(a.get_text))]


def _legend_clear_of_axes(fig):
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    legend = ax.get_legend()
    assert legend is not None
    box, area = legend.get_window_extent(renderer), ax.get_window_extent(renderer)
    return not box.overlaps(area)


@pytest.mark.parametrize("n_curves", [1, 2, 4])
def test_curves_legend_is_off_the_data_and_the_context_is_shown(n_curves):
    curves = {f"method {i}": (list(range(1, 11)), list(np.linspace(700 + i, 750 - i, 10))) for i in range(n_curves)}
    refs = {"random shuffling": 743.9, "floor (spread by class)": 695.3}
    context = context_line("runs/demo", "digits", "SimCLR vs G-SimCLR")
    fig = curves_figure(curves, "same-class pairs per batch", "false negatives in the batches", references=refs,
                        context=context)
    assert _legend_clear_of_axes(fig)
    texts = _texts(fig)
    assert context in texts and "false negatives in the batches" in texts
    assert {*curves, *refs} <= set(texts)


@pytest.mark.parametrize("n_classes", [2, 10, 13, MAX_LEGEND_CLASSES])
def test_tsne_colours_are_keyed_to_class_names_beside_the_map(n_classes):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(n_classes), 5)
    names = [f"class-{chr(97 + i % 26)}{i}" for i in range(n_classes)]
    fig = tsne_figure(rng.normal(size=(len(labels), 2)), labels, "encoder features", names,
                      context_line("runs/x", "photos", "G-SimCLR"))
    legend = fig.axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == names
    colours = {tuple(np.round(h.get_facecolor()[0], 3)) for h in legend.legend_handles}
    assert len(colours) == n_classes  # one colour per class
    assert _legend_clear_of_axes(fig)
    assert "run x · data photos · G-SimCLR" in _texts(fig)


def test_tsne_without_class_names_keys_label_numbers_and_many_labels_get_a_colour_bar():
    rng = np.random.default_rng(0)
    fig = tsne_figure(rng.normal(size=(12, 2)), np.array([0, 1, 2] * 4), label_kind="pseudo label")
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["pseudo label 0", "pseudo label 1",
                                                                          "pseudo label 2"]
    many = np.arange(MAX_LEGEND_CLASSES + 5)
    fig = tsne_figure(rng.normal(size=(len(many), 2)), many, label_kind="pseudo label")
    assert fig.axes[0].get_legend() is None and len(fig.axes) == 2  # the map and its colour bar
    fig = tsne_figure(rng.normal(size=(5, 2)), None)
    assert fig.axes[0].get_legend() is None


def test_context_line_names_what_it_knows():
    assert context_line("runs/2026/demo/", "digits", "SimCLR") == "run demo · data digits · SimCLR"
    assert context_line(None, None, None) == ""
    assert context_line(method="G-SimCLR") == "G-SimCLR"


def test_written_pictures_are_pngs(tmp_path):
    plot_curves({"a": ([1, 2], [3.0, 2.0])}, tmp_path / "c.png", context="run r · data d · m")
    plot_tsne(np.random.default_rng(0).normal(size=(40, 8)), np.repeat([0, 1], 20), tmp_path / "t.png",
              "t", max_points=40, class_names=["cat", "dog"], context="run r")
    for name in ("c.png", "t.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    plot_tsne(np.zeros((4, 2)), None, tmp_path / "none.png", max_points=0)
    assert not (tmp_path / "none.png").exists()


def test_run_pictures_name_the_run_and_its_data(tmp_path):
    """The run folder's curves read the data from its config.yaml and the methods present."""
    from gsimclr.pipeline import _run_context
    from gsimclr.run_folder import RunFolder

    folder = RunFolder(tmp_path / "myrun")
    folder.root.mkdir()
    folder.config.write_text(yaml.safe_dump({"data": "cifar10", "epochs": 3}))
    assert _run_context(folder, ["SimCLR", "G-SimCLR"]) == "run myrun · data cifar10 · SimCLR vs G-SimCLR"


def test_epoch_axes_have_whole_ticks():
    fig = curves_figure({"SimCLR": ([1, 2, 3], [5.4, 5.0, 4.7])})
    fig.canvas.draw()
    ticks = [t for t in fig.axes[0].get_xticks() if 1 <= t <= 3]
    assert ticks and all(float(t).is_integer() for t in ticks)


def test_written_pictures_are_at_print_resolution(tmp_path):
    """A saved picture is PRINT_DPI (300) dots per inch of its figure: a 5.5-inch plot is about 1650 pixels
    wide, not the 530 of matplotlib's screen default."""
    from PIL import Image

    from gsimclr.plots import PRINT_DPI

    plot_curves({"a": ([1, 2], [3.0, 2.0])}, tmp_path / "c.png", context="run r")
    plot_tsne(np.random.default_rng(0).normal(size=(40, 8)), np.repeat([0, 1], 20), tmp_path / "t.png",
              "t", max_points=40, class_names=["cat", "dog"])
    assert PRINT_DPI >= 300
    for name, inches in (("c.png", 5.5), ("t.png", 5.5)):
        with Image.open(tmp_path / name) as image:
            width = image.size[0]
            dpi = image.info.get("dpi", (0, 0))[0]
        assert width >= 0.9 * inches * PRINT_DPI, (name, width)
        assert round(dpi) == PRINT_DPI, (name, dpi)


def test_a_tsne_map_of_a_few_test_images(tmp_path):
    """A labelled set of 24 images holds out 5 test images: t-SNE's perplexity 5 was not below the 5 points,
    a ValueError traceback at the end of the run. A map of 2 to 5 points is drawn; of 1 point, none, with a
    one-line warning."""
    for n in (2, 5):
        plot_tsne(np.random.default_rng(n).normal(size=(n, 8)), np.arange(n) % 2, tmp_path / f"t{n}.png")
        assert (tmp_path / f"t{n}.png").stat().st_size > 0
    with pytest.warns(UserWarning, match="no t-SNE map t1.png: it needs 2 points or more, got 1"):
        plot_tsne(np.zeros((1, 8)), np.zeros(1, int), tmp_path / "t1.png")
    assert not (tmp_path / "t1.png").exists()
