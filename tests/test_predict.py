import csv
import io
import json
import threading

import numpy as np
import pytest
import torch
from inference_models import garbage26_test_photos, tiny_model, tiny_onnx
from PIL import Image

from binwise.cli import main
from binwise.errors import BinwiseError
from binwise.images import load_for_model
from binwise.model.file import load_model
from binwise.inference.classifier import Classifier
from binwise.taxonomy.classes import GARBAGE26


@pytest.fixture(scope="module")
def classifiers():
    return {"torch": Classifier.load(tiny_model()), "onnxruntime": Classifier.load(tiny_onnx())}


def test_prediction_ranks_classes_and_sums_bin_probability(classifiers):
    photo = garbage26_test_photos()[0]
    for backend, classifier in classifiers.items():
        assert classifier.backend == backend
        p = classifier.predict(photo, top_k=26)
        probabilities = np.array([s.probability for s in p.top])
        assert p.source == str(photo)
        assert probabilities.sum() == pytest.approx(1, abs=1e-5)
        assert np.all(np.diff(probabilities) <= 0)
        best = p.top[0]
        assert (best.en, best.zh, best.bin) == (GARBAGE26.classes_en[best.index], GARBAGE26.classes_zh[best.index],
                                                GARBAGE26.class_bins[best.index])
        # an uncalibrated model (this one) is unsure below 50%, and then names its bin only when
        # the classes it hesitates between share it
        assert p.status == ("ok" if best.probability >= 0.5 else "unsure")
        assert p.choices[0] == best
        bins = {GARBAGE26.bin_of(c.index) for c in p.choices}
        assert p.bin == (bins.pop() if len(bins) == 1 else None)
        if p.bin:
            in_bin = sum(s.probability for s in p.top if s.bin == p.bin.id)
            assert p.bin_probability == pytest.approx(in_bin, abs=1e-6)
        assert len(classifier.predict(photo, top_k=3).top) == 3
        json.dumps(p.to_dict())  # JSON-ready


def test_torch_and_onnx_classifiers_agree(classifiers):
    photos = garbage26_test_photos(40)
    a = classifiers["torch"].predict(photos, top_k=26)
    b = classifiers["onnxruntime"].predict(photos, top_k=26)
    for pa, pb in zip(a, b):
        assert [s.index for s in pa.top[:3]] == [s.index for s in pb.top[:3]]
        assert pa.top[0].probability == pytest.approx(pb.top[0].probability, abs=1e-4)
    assert len({p.top[0].index for p in a}) > 1  # the test model does tell photos apart


def test_path_bytes_and_pil_image_give_the_same_answer(classifiers):
    photo = garbage26_test_photos()[5]
    classifier = classifiers["onnxruntime"]
    data = photo.read_bytes()
    by_path, by_bytes, by_image = (classifier.predict(x) for x in (photo, data, Image.open(photo)))
    assert by_bytes.source == f"<{len(data)} bytes>"
    assert by_path.top == by_bytes.top == by_image.top


def test_batched_list_equals_direct(classifiers):
    photos = garbage26_test_photos(7)
    classifier = classifiers["torch"]
    batched = classifier.predict(photos, top_k=2, batch_size=3)
    assert isinstance(batched, list) and len(batched) == 7
    for photo, p in zip(photos, batched):
        single = classifier.predict(photo, top_k=2)
        assert [s.index for s in single.top] == [s.index for s in p.top]
        assert single.top[0].probability == pytest.approx(p.top[0].probability, abs=1e-5)


def test_predict_is_thread_safe(classifiers):
    photos = garbage26_test_photos(16)
    for classifier in classifiers.values():
        expected = [p.top[0].index for p in classifier.predict(photos)]
        results = {}

        def work(worker):
            results[worker] = [classifier.predict(p).top[0].index for p in photos[worker::2] + photos[::-3]]

        threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for worker, got in results.items():
            assert got == [expected[i] for i in list(range(16))[worker::2] + list(range(16))[::-3]]


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_stream_keeps_order_reports_bad_files_and_goes_on(classifiers, tmp_path, backend):
    photos = garbage26_test_photos(5)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(photos[0].read_bytes()[:300])
    # batches of 2 on 2 workers: one batch mixes good and bad, the next is all bad
    sources = [photos[0], broken, tmp_path / "missing.jpg", tmp_path / "gone.jpg"] + photos[1:]
    results = list(classifiers[backend].predict_stream(sources, batch_size=2, workers=2))
    assert [s for s, _ in results] == [str(s) for s in sources]
    assert isinstance(results[1][1], BinwiseError) and "broken.jpg" in str(results[1][1])
    assert isinstance(results[2][1], BinwiseError) and "no such file" in str(results[2][1])
    assert isinstance(results[3][1], BinwiseError) and "gone.jpg" in str(results[3][1])
    good = [r for _, r in results if not isinstance(r, BinwiseError)]
    direct = classifiers[backend].predict(photos)
    assert [p.top[0].index for p in good] == [p.top[0].index for p in direct]
    assert [p.top[0].probability for p in good] == pytest.approx([p.top[0].probability for p in direct], abs=1e-5)


def test_bad_photo_in_predict_raises_a_clear_error(classifiers, tmp_path):
    bad = tmp_path / "notes.jpg"
    bad.write_text("not a photo")
    with pytest.raises(BinwiseError, match="notes.jpg"):
        classifiers["torch"].predict(bad)


def test_load_errors_are_clear(tmp_path):
    with pytest.raises(BinwiseError, match="no such model file"):
        Classifier.load(tmp_path / "nope.onnx")
    with pytest.raises(BinwiseError, match="needs an exported .onnx file"):
        Classifier.load(tiny_model(), backend="onnxruntime")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\x07garbage")
    with pytest.raises(BinwiseError, match="junk.onnx: not a loadable ONNX model"):
        Classifier.load(junk)


def test_onnx_without_binwise_metadata_is_refused(tmp_path):
    import onnx

    model = onnx.load(str(tiny_onnx()))
    del model.metadata_props[:]
    plain = tmp_path / "plain.onnx"
    onnx.save(model, str(plain))
    with pytest.raises(BinwiseError, match="without binwise metadata"):
        Classifier.load(plain)


def reference_top1(model_path, photos) -> np.ndarray:
    """Top-1 of the model run directly on ``load_for_model`` pixels: the evaluation path."""
    model_file = load_model(model_path)
    with torch.inference_mode():
        pixels = torch.from_numpy(np.stack([load_for_model(p, model_file.preprocessing) for p in photos]))
        return torch.cat([model_file.model(chunk) for chunk in pixels.split(32)]).argmax(1).numpy()


def test_predict_agrees_with_the_eval_path_on_every_test_photo():
    photos = garbage26_test_photos()
    reference = reference_top1(tiny_model(), photos)
    for path in (tiny_model(), tiny_onnx()):
        top1 = np.array([p.top[0].index for p in Classifier.load(path).predict(photos)])
        np.testing.assert_array_equal(top1, reference)
    assert len(photos) == 130 and len(set(reference)) > 3


@pytest.mark.slow
def test_real_model_predict_agrees_with_the_eval_path_and_is_mostly_right(garbage26_model, garbage26_data):
    from binwise.export import export_onnx

    photos = sorted((garbage26_data / "test").rglob("*.jpg"))
    reference = reference_top1(garbage26_model, photos)
    onnx_path = export_onnx(garbage26_model, garbage26_model.with_suffix(".onnx"))
    for path in (garbage26_model, onnx_path):
        top1 = np.array([p.top[0].index for p in Classifier.load(path).predict(photos)])
        np.testing.assert_array_equal(top1, reference)
    labels = np.array([GARBAGE26.classes_en.index(p.parent.name) for p in photos])
    assert len(photos) == 130 and (reference == labels).mean() > 0.6


def test_cli_table_json_csv_and_failures(tmp_path, capsys):
    folder = garbage26_test_photos()[0].parent
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    rc = main(["predict", str(tiny_onnx()), str(folder), str(bad), str(tmp_path / "none*.jpg"), "--json"])
    out, err = capsys.readouterr()
    assert rc == 1
    rows = json.loads(out)
    photos = sorted(folder.glob("*.jpg"))
    assert [r["source"] for r in rows] == [str(p) for p in photos] + [str(bad)]
    assert rows[-1]["error"].startswith(str(bad)) and len(rows[0]["top"]) == 3
    assert f"{bad}: " in err and "none*.jpg: no such file" in err and "2 of" in err

    assert main(["predict", str(tiny_model()), str(photos[0]), "-k", "2"]) == 0
    table = capsys.readouterr().out.strip()
    assert table.startswith(str(photos[0])) and rows[0]["top"][0]["en"] in table and "%" in table

    glob = str(folder / "*.jpg")
    assert main(["predict", str(tiny_onnx()), glob, "--csv", "-k", "2", "--grid", str(tmp_path / "g.png")]) == 0
    table = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(table) == len(photos) and table[0]["class1"] == rows[0]["top"][0]["en"]
    assert set(table[0]) >= {"source", "bin", "bin_probability", "class2", "probability2"}
    with Image.open(tmp_path / "g.png") as grid:
        assert grid.width > 400 and grid.height > 300
