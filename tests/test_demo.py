"""`eet-demo`: the page in a real headless Chromium (upload two photos, move the strength slider, untick an
AU, transfer; the synthetic pair; a photo without a face and a corrupt upload answered in the page while
the server keeps serving), the handlers called directly, and the command's refusals.

The browser test needs Debian's chromium and chromedriver (and selenium): without them it is skipped, unless
``EET_REQUIRE_BROWSER=1`` (CI), where it fails. ``EET_DEMO_SCREENSHOT=PATH`` writes a compact screenshot of
the page after a transfer and a synthetic pair to PATH (docs/images/demo.png was made so, with the
quick-start model: ``EET_DEMO_CKPT=runs/compare/eet/stage2/last.ckpt``).
"""

from __future__ import annotations

import importlib.util
import os
import socket
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
REQUIRED = os.environ.get("EET_REQUIRE_BROWSER", "").strip() == "1"


def _missing(reason: str) -> None:
    if REQUIRED:
        pytest.fail(f"EET_REQUIRE_BROWSER=1 but {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


if importlib.util.find_spec("gradio") is None:  # the whole file needs Gradio
    _missing("gradio is not installed (pip install gradio)")

from eet_lightning.cli.demo import DemoApp, Unreadable, _photo_class, build_demo, main  # noqa: E402
from eet_lightning.methods import load_transfer_model  # noqa: E402

skimage_data = pytest.importorskip("skimage.data")


# ---------------------------------------------------------------------------------------------- fixtures


def _save(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("demo_photos")
    camera = np.repeat(skimage_data.camera()[:, :, None], 3, axis=2)  # the cameraman, 512 x 512
    corrupt = root / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 8)
    return {
        "astronaut": _save(root / "astronaut.png", skimage_data.astronaut()),
        "camera": _save(root / "camera.png", camera),
        "coffee": _save(root / "coffee.png", skimage_data.coffee()),  # a cup: no face
        "corrupt": corrupt,
    }


@pytest.fixture(scope="module")
def ckpt(tiny_run: Path) -> Path:
    # EET_DEMO_CKPT: another checkpoint for the page (the screenshot in docs/ uses the quick-start model)
    return Path(os.environ.get("EET_DEMO_CKPT") or tiny_run / "stage2" / "last.ckpt")


@pytest.fixture(scope="module")
def app(ckpt: Path) -> DemoApp:
    demo_app = DemoApp(load_transfer_model(ckpt), ckpt=ckpt)
    yield demo_app
    demo_app.close()


def _rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---------------------------------------------------------------------------------------------- handlers


def test_photo_transfer_shows_result_crops_chart_and_report(app: DemoApp, photos) -> None:
    target = _rgb(photos["camera"])
    view = app.transfer(_rgb(photos["astronaut"]), target, aus=app.model.aus[:-1], strength=0.8)
    assert view.message is None
    assert view.result.shape == target.shape and view.result.dtype == np.uint8
    assert not np.array_equal(view.result, target)  # the face was redrawn and pasted back
    size = app.model.image_size
    assert [c.shape for c in view.crops] == [(size, size, 3)] * 3
    assert view.chart is not None and view.chart.axes  # the AU chart (EET reads AUs)
    assert "target face: detector" in view.report
    assert view.model_warning and "synthetic" in view.model_warning  # the tiny model is synthetic-only


@pytest.mark.parametrize(
    "source, target, options, expected",
    [
        ("coffee", "camera", {}, "no face found in the source photo"),
        ("astronaut", "coffee", {}, "no face found in the target photo"),
        (None, "camera", {}, "upload a source photo"),
        ("astronaut", None, {}, "upload a target photo"),
        ("astronaut", "camera", {"target_face": 2}, "asks for face 3, but the target photo has 1 face"),
        ("astronaut", "camera", {"strength": 7}, "strength must be from 0"),
        ("tiny", "camera", {}, "a face needs at least"),
    ],
)
def test_bad_inputs_come_back_as_messages(app: DemoApp, photos, source, target, options, expected) -> None:
    images = {k: _rgb(v) for k, v in photos.items() if k != "corrupt"}
    images["tiny"] = np.zeros((12, 12, 3), np.uint8)
    view = app.transfer(images.get(source), images.get(target), **options)
    assert view.message is not None and expected in view.message, view.message
    assert view.result is None and view.crops is None


def test_unreadable_upload_is_a_message(app: DemoApp, photos) -> None:
    from gradio.data_classes import ImageData

    photo = _photo_class()(type="numpy", image_mode="RGB")
    value = photo.preprocess(ImageData(path=str(photos["corrupt"]), orig_name="corrupt.png"))
    assert isinstance(value, Unreadable) and "corrupt.png is not a readable image" in value.message
    view = app.transfer(_rgb(photos["astronaut"]), value)
    assert view.message.startswith("the target photo: corrupt.png is not a readable image")
    good = photo.preprocess(ImageData(path=str(photos["astronaut"]), orig_name="astronaut.png"))
    assert isinstance(good, np.ndarray) and good.shape == (512, 512, 3)


def test_synthetic_pair_against_the_true_swap(app: DemoApp) -> None:
    view = app.synthetic_pair(seed=3)
    assert view.message is None and view.seed == 3
    size = app.model.image_size
    assert {k: v.shape for k, v in view.images.items()} == {
        k: (size, size, 3) for k in ("source", "target", "swap", "truth")
    }
    assert not np.array_equal(view.images["truth"], view.images["target"])  # the expression changed
    assert "seed 3 (plain swap)" in view.errors and "| model's swap |" in view.errors
    assert view.chart is not None and view.report
    again = app.synthetic_pair(seed=3)
    np.testing.assert_array_equal(again.images["truth"], view.images["truth"])  # a seed is one pair
    selective = app.synthetic_pair(aus=[12], strength=1.0, seed=3)
    assert selective.message is None and "AUs 12, strength 1" in selective.errors


def _clip(path: Path, image: np.ndarray, frames: int = 4) -> Path:
    h, w = image.shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (w, h))
    for _ in range(frames):
        writer.write(np.ascontiguousarray(image[:, :, ::-1]))
    writer.release()
    return path


def test_source_video_and_a_video_without_a_face(app: DemoApp, photos, tmp_path: Path) -> None:
    face = cv2.resize(skimage_data.astronaut(), (256, 256), interpolation=cv2.INTER_AREA)
    view = app.transfer(None, _rgb(photos["camera"]), source_video=str(_clip(tmp_path / "face.mp4", face)))
    assert view.message is None, view.message
    assert view.video.endswith(".webm") and view.video_file.endswith(".mp4")  # browsers play VP8 WebM
    assert "video: 4 frames" in view.report and "target face: detector" in view.report  # eet-transfer's
    for path in (view.video, view.video_file):
        cap = cv2.VideoCapture(path)
        frames = 0
        while cap.read()[0]:
            frames += 1
        cap.release()
        assert frames == 4, path
    cup = cv2.resize(skimage_data.coffee(), (256, 192), interpolation=cv2.INTER_AREA)
    view = app.transfer(None, _rgb(photos["camera"]), source_video=str(_clip(tmp_path / "cup.mp4", cup)))
    assert view.message is not None and view.message.startswith("no face found in the source video")


# ---------------------------------------------------------------------------------------------- refusals


def _refused(capsys: pytest.CaptureFixture, args: list[str]) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("eet-demo: error: ") and "\n" not in err, err
    return err


def test_command_refusals(ckpt: Path, tiny_run: Path, tmp_path: Path, capsys) -> None:
    port = str(_free_port())
    assert "no such checkpoint file" in _refused(
        capsys, ["--ckpt", str(tmp_path / "nope.ckpt"), "--port", port]
    )
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint")
    assert "not a readable PyTorch checkpoint" in _refused(capsys, ["--ckpt", str(text), "--port", port])
    stage1 = tiny_run / "stage1" / "last.ckpt"
    assert "expected a stage-2 checkpoint" in _refused(capsys, ["--ckpt", str(stage1), "--port", port])
    assert "a port is from 1 to 65535" in _refused(capsys, ["--ckpt", str(ckpt), "--port", "70000"])
    assert "not a port number" in _refused(capsys, ["--ckpt", str(ckpt), "--port", "http"])
    missing = str(tmp_path / "facenet.pt")
    assert "--face-weights" in _refused(
        capsys, ["--ckpt", str(ckpt), "--port", port, "--face-weights", missing]
    )
    assert "the following arguments are required: --ckpt" in _refused(capsys, [])
    empty = tmp_path / "empty"
    empty.mkdir()
    for folder, expected in (
        (tmp_path / "none", "no such folder"),
        (text, "not a folder"),
        (empty, "the folder holds no photos"),
    ):
        err = _refused(capsys, ["--ckpt", str(ckpt), "--port", port, "--examples", str(folder)])
        assert err.startswith(f"eet-demo: error: --examples {folder}: {expected}"), err


def test_port_in_use_is_refused(ckpt: Path, capsys) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert "is in use" in _refused(capsys, ["--ckpt", str(ckpt), "--port", str(port)])


def test_bad_face_weights_file_is_refused(ckpt: Path, tmp_path: Path, capsys) -> None:
    weights = tmp_path / "facenet.pt"
    weights.write_bytes(b"garbage")
    err = _refused(capsys, ["--ckpt", str(ckpt), "--port", str(_free_port()), "--face-weights", str(weights)])
    assert "--face-weights" in err and "not a readable PyTorch state dict" in err


# ---------------------------------------------------------------------------------------------- browser


def _browser():
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        _missing(
            f"no headless browser for the demo test: {', '.join(missing)} missing (apt install chromium "
            "chromium-driver)"
        )
    if importlib.util.find_spec("selenium") is None:
        _missing("selenium is not installed (pip install selenium)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-quic",
        "--window-size=1400,1800",
    ):
        options.add_argument(arg)
    profile = tempfile.TemporaryDirectory(prefix="eet-demo-chromium-")
    options.add_argument(f"--user-data-dir={profile.name}")
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.eet_profile = profile  # removed with the driver
    return driver


def _compact_png(png: bytes, path: Path, max_bytes: int = 400_000) -> None:
    """A screenshot as a small PNG: scaled down if need be, 256 colours."""
    image = Image.open(__import__("io").BytesIO(png)).convert("RGB")
    for width in (1400, 1200, 1000, 900):
        scaled = (
            image
            if image.width <= width
            else image.resize((width, round(image.height * width / image.width)), Image.LANCZOS)
        )
        small = scaled.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        path.parent.mkdir(parents=True, exist_ok=True)
        small.save(path, optimize=True)
        if path.stat().st_size < max_bytes:
            return


def test_page_in_a_headless_browser(app: DemoApp, photos, tmp_path: Path) -> None:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    driver = _browser()
    demo = build_demo(app.model, app=app, examples=[photos["astronaut"], photos["camera"]])
    calls = []
    transfer = app.transfer

    def spy(*args, **kwargs):  # what the page sent to the server
        calls.append((args, kwargs))
        return transfer(*args, **kwargs)

    app.transfer = spy
    port = _free_port()
    try:
        demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
        wait = WebDriverWait(driver, 60, ignored_exceptions=(StaleElementReferenceException,))

        def find(css: str):
            return driver.find_elements(By.CSS_SELECTOR, css)

        def loaded(css: str) -> bool:  # an image that has arrived and has pixels
            return any(
                driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img)
                for img in find(f"{css} img")
            )

        def shown(css: str) -> str:
            return " ".join(e.text for e in find(css) if e.is_displayed())

        def sources(css: str) -> set[str]:
            return {img.get_attribute("src") for img in find(f"{css} img")}

        def upload(slot: str, path: Path) -> None:
            """Upload through the slot's file input and wait until the page shows the new file (a corrupt
            one too: an image element whose picture does not load)."""
            before = sources(f"#{slot}")
            find(f"#{slot} input[type=file]")[0].send_keys(str(path))
            wait.until(lambda d: sources(f"#{slot}") - before - {None, ""})

        driver.get(f"http://127.0.0.1:{port}/")
        wait.until(lambda d: find("#transfer-button"))
        assert "synthetic faces" in shown("#model-warning")  # the tiny model is synthetic-only

        # the synthetic pair with the plain swap (the controls as they start): the model's swap beside the
        # true swap
        find("#synthetic-button")[0].click()
        wait.until(lambda d: loaded("#synthetic-swap") and loaded("#synthetic-truth"))
        assert loaded("#synthetic-source") and loaded("#synthetic-target")
        wait.until(lambda d: "L1 against the true swap" in shown("#synthetic-errors"))
        assert "True swap" in shown("#synthetic-truth") and "Quality report" in shown("#synthetic-report")

        # two real photos (the source uploaded, the target picked from --examples), strength 1 -> 0.8 with
        # the keyboard on the slider, AU26 unticked, transfer
        upload("source-image", photos["astronaut"])
        picks = find("#target-examples button.gallery-item")
        assert len(picks) == 2 and len(find("#source-examples button.gallery-item")) == 2
        picks[1].click()  # the cameraman
        wait.until(lambda d: loaded("#source-image") and loaded("#target-image"))
        slider = find("#strength input[type=range]")[0]
        driver.execute_script("arguments[0].focus()", slider)
        for _ in range(4):
            slider.send_keys(Keys.ARROW_LEFT)
        assert find("#strength input[type=number]")[0].get_attribute("value") == "0.8"
        box = find('#aus input[type=checkbox][name="26"]')[0]
        box.click()
        assert not box.is_selected()
        find("#transfer-button")[0].click()
        wait.until(lambda d: loaded("#result-image") and loaded("#au-chart") and "model:" in shown("#report"))
        for crop in ("#crop-source", "#crop-target", "#crop-result"):
            assert loaded(crop), crop
        assert "Quality report" in shown("#report") and "target face: detector" in shown("#report")
        assert not shown("#demo-message")
        (args, kwargs) = calls[-1]
        assert args[3] == pytest.approx(0.8) and 26 not in args[2] and 12 in args[2]

        shot = tmp_path / "demo.png"
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1400, min(2600, height + 140))  # the whole page, for the screenshot
        time.sleep(0.5)
        png = driver.get_screenshot_as_png()
        _compact_png(png, shot)
        assert shot.stat().st_size > 10_000
        if os.environ.get("EET_DEMO_SCREENSHOT"):
            _compact_png(png, Path(os.environ["EET_DEMO_SCREENSHOT"]))
        driver.set_window_size(1400, 1800)

        # a corrupt upload, then a photo without a face: messages in the page, no stack trace
        upload("target-image", photos["corrupt"])
        find("#transfer-button")[0].click()
        wait.until(lambda d: "is not a readable image" in shown("#demo-message"))
        upload("target-image", photos["camera"])
        upload("source-image", photos["coffee"])
        find("#transfer-button")[0].click()
        wait.until(lambda d: "no face found in the source photo" in shown("#demo-message"))
        assert "Traceback" not in driver.page_source
        wait.until(lambda d: not loaded("#result-image"))  # no stale result beside the message

        # ... and the server still answers the next transfer
        upload("source-image", photos["astronaut"])
        find("#transfer-button")[0].click()
        wait.until(lambda d: loaded("#result-image") and not shown("#demo-message"))
        assert len(calls) == 4

        # a source video: the result plays in the browser (VP8 WebM; Chromium has no decoder for the
        # MPEG-4 Part 2 that OpenCV writes mp4 with) and the mp4 is offered for download
        face = cv2.resize(skimage_data.astronaut(), (256, 256), interpolation=cv2.INTER_AREA)
        clip = _clip(tmp_path / "clip.mp4", face)
        find("#source-video-accordion button")[0].click()
        wait.until(lambda d: find("#source-video input[type=file]"))
        find("#source-video input[type=file]")[0].send_keys(str(clip))
        time.sleep(1.0)  # the upload reaches the server
        find("#transfer-button")[0].click()
        playing = (
            "const v = document.querySelector('#result-video video');"
            "return v !== null && v.readyState >= 2 && v.videoWidth > 0 && !v.error"
        )
        wait.until(lambda d: d.execute_script(playing))
        offered = shown("#result-file")
        assert "target_with_source" in offered and ".mp4" in offered and not shown("#demo-message")
        assert len(calls) == 5
    finally:
        app.transfer = transfer
        driver.quit()
        driver.eet_profile.cleanup()
        demo.close()


def test_the_page_writes_no_type_stub_into_the_package() -> None:
    """Gradio's component metaclass writes a .pyi beside the module defining a component class; the demo's
    photo input must not (the installed package may be read-only and is not ours to change)."""
    from eet_lightning.cli import demo

    stub = Path(demo.__file__).with_suffix(".pyi")
    stub.unlink(missing_ok=True)
    demo._photo_class.__wrapped__()  # a fresh class, past the cache
    assert not stub.exists()
