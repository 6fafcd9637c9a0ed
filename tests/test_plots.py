"""What the figures say: file names and Chinese names on the mistakes grid, plain-word legends."""

from inference_models import garbage26_test_photos
from PIL import Image

from binwise.evaluation import fonts, plots
from binwise.taxonomy.classes import GARBAGE26


def test_mistakes_grid_titles_each_photo_with_its_file_name_and_both_class_names(tmp_path):
    photo = garbage26_test_photos(1)[0]
    long_name = tmp_path / ("IMG_20240101_123456_taken_with_a_phone_camera" + photo.suffix)
    long_name.write_bytes(photo.read_bytes())
    mistakes = [{"path": str(photo), "true": "Battery", "predicted": "Paper", "confidence": 0.42},
                {"path": str(long_name), "true": "Eggshell", "predicted": "Seashell", "confidence": 0.9}]
    out = tmp_path / "misclassified.png"
    fig = plots.misclassified_grid(mistakes, out, taxonomy=GARBAGE26)
    titles = [ax.get_title() for ax in fig.axes][:2]
    assert titles[0] == (f"{photo.name}\n{fonts.bilingual('Battery', '电池')}\n"
                         f"-> {fonts.bilingual('Paper', '纸张')} (42%)")
    first_line = titles[1].split("\n")[0]
    assert first_line.startswith("IMG_2024") and first_line.endswith("camera" + photo.suffix) and "…" in first_line
    assert len(first_line) <= 26
    with Image.open(out) as image:
        assert image.width > 400


def test_training_phases_are_named_in_plain_words():
    assert plots.phase_in_words("head (train - val)") == "last layer only"
    assert plots.phase_in_words("head (all train)") == "last layer only, final fit on training + validation photos"
    assert plots.phase_in_words("finetune (train - val)") == "fine-tuning the last blocks"
    assert plots.phase_in_words("head warm start (all train)").startswith("last layer only (warm start), final fit")
    assert plots.phase_in_words("my phase") == "my phase"
