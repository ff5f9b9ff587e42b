"""Hugging Face data sets by id or local folder (--data hf:...), never the network."""

import os

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # before datasets is imported: it reads these once
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from gsimclr.data.sources import describe_sources, load_split  # noqa: E402
from gsimclr.errors import UserError  # noqa: E402

datasets = pytest.importorskip("datasets")


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """Offline even when datasets was imported before this module set the variables."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True, raising=False)


def _images(n, rng, size=(20, 24)):
    return [Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)) for _ in range(n)]


@pytest.fixture
def saved_dict(tmp_path):
    """A DatasetDict (train/validation) written with save_to_disk, ClassLabel labels, RGBA and gray images."""
    rng = np.random.default_rng(0)
    features = datasets.Features({"picture": datasets.Image(), "y": datasets.ClassLabel(names=["cat", "dog", "eel"]),
                                  "note": datasets.Value("string")})
    train = _images(5, rng) + [Image.new("L", (24, 20), 128), Image.new("RGBA", (24, 20), (255, 0, 0, 0))]
    parts = {
        "train": datasets.Dataset.from_dict({"picture": train, "y": [0, 1, 2, 0, 1, 2, 0], "note": ["x"] * 7},
                                            features=features),
        "validation": datasets.Dataset.from_dict({"picture": _images(3, rng), "y": [2, 1, 0], "note": ["v"] * 3},
                                                 features=features),
    }
    path = tmp_path / "saved"
    datasets.DatasetDict(parts).save_to_disk(str(path))
    return path, parts


def test_local_saved_dataset_loads_like_any_source(saved_dict):
    path, parts = saved_dict
    train = load_split(f"hf:{path}")
    assert train.images.shape == (7, 20, 20, 3) and train.images.dtype == np.uint8
    assert train.labels.tolist() == [0, 1, 2, 0, 1, 2, 0] and train.classes == ["cat", "dog", "eel"]
    assert (train.images[5] == 128).all() and (train.images[6] == 0).all()  # gray -> RGB, transparent -> black
    first = np.asarray(parts["train"][0]["picture"].convert("RGB").resize((24, 20)))
    assert np.array_equal(train.images[0], np.asarray(Image.fromarray(first).crop((2, 0, 22, 20))))
    test = load_split(f"hf:{path}", "test", image_size=8)  # "test" falls back to the validation split
    assert test.images.shape == (3, 8, 8, 3) and test.labels.tolist() == [2, 1, 0]
    assert load_split(f"hf:{path}", "unlabeled") is None


def test_decoded_once_then_cached(saved_dict, monkeypatch):
    from gsimclr.data.sources import hf

    path, _ = saved_dict
    first = load_split(f"hf:{path}")
    monkeypatch.setattr(hf, "_decode_hf", lambda *a, **k: pytest.fail("decoded again"))
    again = load_split(f"hf:{path}")
    assert np.array_equal(first.images, again.images) and first.fingerprint == again.fingerprint


def test_single_dataset_without_labels_and_a_data_folder(tmp_path):
    rng = np.random.default_rng(1)
    datasets.Dataset.from_dict({"image": _images(4, rng)}, features=datasets.Features({"image": datasets.Image()})
                               ).save_to_disk(str(tmp_path / "one"))
    data = load_split(f"hf:{tmp_path / 'one'}")
    assert len(data) == 4 and data.labels is None and not data.has_labels
    assert load_split(f"hf:{tmp_path / 'one'}", "test") is None
    # a local data folder read by load_dataset's imagefolder builder (class folders -> ClassLabel)
    for i, name in enumerate(["ant", "bee"]):
        (tmp_path / "folder" / "train" / name).mkdir(parents=True)
        for j, img in enumerate(_images(2, rng)):
            img.save(tmp_path / "folder" / "train" / name / f"{j}.png")
    folder = load_split(f"hf:{tmp_path / 'folder'}", cache=False)
    assert len(folder) == 4 and sorted(folder.labels.tolist()) == [0, 0, 1, 1] and folder.classes == ["ant", "bee"]


def test_errors_are_one_line(tmp_path):
    for spec, pattern in [("hf:", "name is missing"), (f"hf:{tmp_path / 'nothing'}", "cannot load it"),
                          ("hf:surely-not/a-dataset-anywhere:cfg", "cannot load it")]:
        with pytest.raises(UserError, match=pattern) as err:
            load_split(spec)
        assert "\n" not in str(err.value)
    datasets.Dataset.from_dict({"x": [1, 2]}).save_to_disk(str(tmp_path / "noimg"))
    with pytest.raises(UserError, match="no Image column"):
        load_split(f"hf:{tmp_path / 'noimg'}")
    assert "hf:NAME[:CONFIG]" in describe_sources()


def test_missing_datasets_package_is_one_line(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_datasets(name, *args, **kwargs):
        if name == "datasets":
            raise ImportError("no")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_datasets)
    with pytest.raises(UserError, match=r"pip install 'gsimclr\[hf\]'"):
        load_split("hf:someone/something")


def _online(monkeypatch, endpoint):
    """Offline mode off, the Hub at ``endpoint`` (nothing listens there: no network)."""
    import huggingface_hub.constants

    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", False, raising=False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", endpoint)
    for proxy in ("HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(proxy, raising=False)


@pytest.fixture
def silent_server():
    """A host that accepts connections and never answers (a network that swallows requests)."""
    import socket

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield f"http://127.0.0.1:{server.getsockname()[1]}"


@pytest.mark.parametrize("kind", ["refused", "silent"])
def test_a_hub_id_without_network_fails_fast_in_one_line(monkeypatch, kind, request):
    import time

    from gsimclr.data.sources import hf

    _online(monkeypatch, "http://127.0.0.1:9" if kind == "refused" else request.getfixturevalue("silent_server"))
    monkeypatch.setattr(hf, "HUB_PROBE_SECONDS", 0.5)
    started = time.perf_counter()
    with pytest.raises(UserError, match=r"hf:nobody/no-such-set: no network \(.* is unreachable\) and the data set "
                                        "is not in the local Hugging Face cache"):
        load_split("hf:nobody/no-such-set")
    assert time.perf_counter() - started < 15  # it retried for 23 s (a generous bound: CI machines can be loaded)
    assert not datasets.config.HF_HUB_OFFLINE  # offline mode was only borrowed


def test_a_hub_id_in_offline_mode_fails_fast_in_one_line():
    import time

    started = time.perf_counter()
    with pytest.raises(UserError, match="hf:nobody/no-such-set: cannot load it with datasets"):
        load_split("hf:nobody/no-such-set")
    assert time.perf_counter() - started < 15


def test_the_hub_probe():
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from gsimclr.data.sources import hub_reachable

    class Teapot(BaseHTTPRequestHandler):
        def do_HEAD(self):
            self.send_response(418)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Teapot)
    threading.Thread(target=server.handle_request, daemon=True).start()
    try:
        assert hub_reachable(f"http://127.0.0.1:{server.server_port}", timeout=3)  # any answer counts
    finally:
        server.server_close()
    assert not hub_reachable("http://127.0.0.1:9", timeout=0.5)
    assert not hub_reachable("not a url", timeout=0.5)


def test_resize_stretch_applies_to_hugging_face_images(tmp_path):
    """--resize stretch was ignored for hf: data (always the centre crop), and shared the crop's cache entry."""
    wide = np.zeros((10, 40, 3), np.uint8)
    wide[:, :10], wide[:, 10:30], wide[:, 30:] = (255, 0, 0), (0, 255, 0), (0, 0, 255)
    datasets.Dataset.from_dict({"image": [Image.fromarray(wide)] * 2},
                               features=datasets.Features({"image": datasets.Image()})).save_to_disk(str(tmp_path / "w"))
    crop = load_split(f"hf:{tmp_path / 'w'}", image_size=8, cache_dir=str(tmp_path / "c"))
    stretched = load_split(f"hf:{tmp_path / 'w'}", image_size=8, cache_dir=str(tmp_path / "c"), resize="stretch")
    assert (crop.images[0, 4] == (0, 255, 0)).all()
    assert stretched.images[0, 4, 0].tolist() == [255, 0, 0] and stretched.images[0, 4, -1].tolist() == [0, 0, 255]


def _labelled(tmp_path, name, labels, feature, test_labels=None):
    rng = np.random.default_rng(2)
    features = datasets.Features({"image": datasets.Image(), "label": feature})
    parts = {"train": datasets.Dataset.from_dict({"image": _images(len(labels), rng, (8, 8)), "label": labels},
                                                 features=features)}
    if test_labels is not None:
        parts["test"] = datasets.Dataset.from_dict({"image": _images(len(test_labels), rng, (8, 8)),
                                                    "label": test_labels}, features=features)
    datasets.DatasetDict(parts).save_to_disk(str(tmp_path / name))
    return f"hf:{tmp_path / name}"


def test_hugging_face_labels_follow_the_parquet_rules(tmp_path):
    """A null or -1 label among others was kept as -1 (the whole set then counted as unlabelled, silently);
    string labels and a bool label column were read as an unlabelled set. Now as parquet labels: some
    null/-1 is an error naming the row, all of them an unlabelled set with a warning, strings index the
    sorted names of every split, another type is an error."""
    with pytest.raises(UserError, match=r"train row 1: null label in column 'label' \(1 of 3"):
        load_split(_labelled(tmp_path, "nulls", [0, None, 1], datasets.Value("int64")), cache=False)
    with pytest.raises(UserError, match=r"train row 2: null label.*null or -1"):
        load_split(_labelled(tmp_path, "minus", [0, 1, -1], datasets.ClassLabel(names=["a", "b"])), cache=False)
    with pytest.raises(UserError, match=r"train row 0: label 0.5 .*whole numbers"):
        load_split(_labelled(tmp_path, "frac", [0.5, 1.0], datasets.Value("float32")), cache=False)
    with pytest.warns(UserWarning, match="only nulls"):
        data = load_split(_labelled(tmp_path, "none", [-1, -1], datasets.ClassLabel(names=["a", "b"])), cache=False)
    assert data.labels is None and data.classes is None
    spec = _labelled(tmp_path, "names", ["dog", "cat", "dog"], datasets.Value("string"), ["eel", "cat"])
    train, test = load_split(spec, cache=False), load_split(spec, "test", cache=False)
    assert train.classes == test.classes == ["cat", "dog", "eel"]
    assert train.labels.tolist() == [1, 0, 1] and test.labels.tolist() == [2, 0]
    with pytest.raises(UserError, match=r"label column 'label' is Value\('bool'\).*integers or strings"):
        load_split(_labelled(tmp_path, "bools", [True, False], datasets.Value("bool")), cache=False)
