import numpy as np
import pytest
from inference_models import garbage26_test_photos, tiny_model, tiny_onnx
from PIL import Image

from binwise.cli import main
from binwise.errors import BinwiseError
from binwise.inference.explain import grad_cam, overlay
from binwise.inference.classifier import Classifier
from binwise.taxonomy.classes import GARBAGE26


@pytest.fixture(scope="module")
def classifier():
    return Classifier.load(tiny_model())


def test_heatmap_explains_the_top1_class_at_input_size(classifier):
    photo = garbage26_test_photos()[10]
    heatmap, explained = grad_cam(classifier, photo)
    assert heatmap.shape == (224, 224) and heatmap.dtype == np.float32
    assert heatmap.min() >= 0 and heatmap.max() == pytest.approx(1)
    assert explained == classifier.predict(photo).top[0].index
    assert heatmap.std() > 0.05  # not flat: some places matter more than others


def test_another_class_gives_another_heatmap_and_no_parameter_gradients(classifier):
    photo = garbage26_test_photos()[10]
    top1, _ = grad_cam(classifier, photo)
    last = classifier.predict(photo, top_k=26).top[-1].index
    other, explained = grad_cam(tiny_model(), photo, class_index=last)
    assert explained == last
    assert np.abs(top1 - other).mean() > 0.05
    assert all(p.grad is None for p in classifier.torch_model.parameters())
    with pytest.raises(ValueError, match="out of range"):
        grad_cam(classifier, photo, class_index=26)


def test_onnx_models_cannot_be_explained():
    with pytest.raises(BinwiseError, match="tiny.onnx: .*no gradients"):
        grad_cam(tiny_onnx(), garbage26_test_photos()[0])


def test_overlay_is_the_model_crop_tinted_by_the_heatmap(classifier):
    # a wide grey photo with white side bands that the model's centre crop cuts off
    photo = Image.new("RGB", (600, 300), (128, 128, 128))
    photo.paste((255, 255, 255), (0, 0, 100, 300))
    photo.paste((255, 255, 255), (500, 0, 600, 300))
    heatmap = np.zeros((224, 224), np.float32)
    heatmap[:, 112:] = 1
    pixels = np.asarray(overlay(photo, heatmap, alpha=0.5, preprocessing=classifier.preprocessing), np.float32)
    assert pixels.shape == (224, 224, 3)
    # jet: 0 is dark blue, 1 is dark red; half of grey 128 each
    np.testing.assert_allclose(pixels[:, :112].mean((0, 1)), [64, 64, 128], atol=2)
    np.testing.assert_allclose(pixels[:, 112:].mean((0, 1)), [128, 64, 64], atol=2)


def test_cli_explain_by_class_name(tmp_path, capsys):
    photo = garbage26_test_photos()[0]
    out = tmp_path / "cam.png"
    assert main(["explain", str(tiny_model()), str(photo), "--out", str(out), "--class", "Battery"]) == 0
    assert "explained class 22 Battery 电池 (probability " in capsys.readouterr().err
    with Image.open(out) as image:
        # the 224 x 224 overlay with its title above and its colour bar beside it
        assert image.width > 224 * 1.5 and image.height > 224 * 1.2
    assert main(["explain", str(tiny_model()), str(photo), "--out", str(out), "--class", "Sofa"]) == 2
    assert "unknown class 'Sofa'" in capsys.readouterr().err


def test_real_model_looks_at_the_object(garbage26_model, garbage26_data):
    """Each photo, shrunk into the top-right quadrant of a plain grey canvas: the heatmap of its
    true class puts more weight on that quadrant than on the other three together."""
    classifier = Classifier.load(garbage26_model)
    size = classifier.preprocessing.input_size
    for name in ("Banana Peel", "Basketball", "Plastic Bottle", "Battery"):
        photo = sorted((garbage26_data / "test" / name).glob("*.jpg"))[0]
        canvas = Image.new("RGB", (size, size), (128, 128, 128))  # 128 is ~0 after [-1, 1] scaling
        canvas.paste(Image.open(photo).convert("RGB").resize((size // 2, size // 2)), (size // 2, 0))
        heatmap, _ = grad_cam(classifier, canvas, GARBAGE26.classes_en.index(name))
        half = size // 2
        inside = heatmap[:half, half:].sum()
        assert inside > heatmap.sum() - inside, name
