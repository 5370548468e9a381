"""Side-by-side studies: building the page, its server, the report's counts and intervals, and the page clicked
through in Debian's headless chromium (`tests.browser.start_chromium`; skipped without it).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fourview.cli import main
from fourview.errors import InputError
from fourview.evaluation.sbs import build_study, make_server, read_study, study_report, wilson_interval
from tests.browser import start_chromium

NAMES = ("0000_a_red_mug", "0001_a_blue_car", "0002_a_tree", "0003_a_vase", "0004_a_lamp", "0005_a_bed")


def _write_asset(folder: Path, prompt: str, colour: tuple[int, int, int]) -> None:
    """An asset folder as `Asset.save` writes it, as far as a study reads it: meta.json and a 2-frame turntable.gif."""
    folder.mkdir(parents=True)
    (folder / "meta.json").write_text(json.dumps({"prompt": prompt, "seed": 0}))
    frames = [Image.new("RGB", (16, 16), colour), Image.new("RGB", (16, 16), tuple(255 - c for c in colour))]
    frames[0].save(folder / "turntable.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)


@pytest.fixture(scope="module")
def systems(tmp_path_factory) -> tuple[Path, Path]:
    """A: a bench text output (OUT/assets/NAME) with one asset B lacks; B: a batch-like folder (DIR/NAME)."""
    root = tmp_path_factory.mktemp("systems")
    for name in NAMES:
        prompt = " ".join(name.split("_")[1:])
        _write_asset(root / "a" / "assets" / name, prompt, (200, 30, 30))
        _write_asset(root / "b" / name, prompt, (30, 30, 200))
    _write_asset(root / "a" / "assets" / "0006_only_in_a", "only in a", (0, 0, 0))
    (root / "b" / "not_an_asset").mkdir()  # no meta.json: ignored
    return root / "a", root / "b"


@pytest.fixture(scope="module")
def study(systems, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("study") / "study"
    built = build_study(*systems, out, seed=3)
    assert (built.trials, built.only_a, built.only_b) == (len(NAMES), ["0006_only_in_a"], [])
    return out


def test_the_study_pairs_assets_by_name_in_a_recorded_seeded_order_and_hides_the_systems(systems, study, tmp_path):
    key = read_study(study)
    trials = key["trials"]
    assert sorted(t["name"] for t in trials) == sorted(NAMES) and key["seed"] == 3
    assert [t["id"] for t in trials] == [f"t{k:03d}" for k in range(len(NAMES))]
    assert {t["left"] for t in trials} == {"A", "B"}  # seed 3 puts A on both sides
    for t in trials:
        left, right = (np.asarray(Image.open(study / m).convert("RGB"))[0, 0] for m in t["media"])
        assert (left[0] > left[2]) == (t["left"] == "A") and (right[0] > right[2]) == (t["left"] == "B")
        assert t["media"] == [f"media/{t['id']}-1.gif", f"media/{t['id']}-2.gif"]
    page = (study / "index.html").read_text()
    public = json.loads(page.split('<script type="application/json" id="study">')[1].split("</script>")[0])
    assert public["study_id"] == key["study_id"] and public["questions"] == key["questions"]
    assert public["trials"] == [{"id": t["id"], "prompt": t["prompt"], "media": t["media"]} for t in trials]
    assert str(systems[0]) not in page and "0000_a_red_mug" not in page  # which system is where: not in the page
    assert "://" not in page  # no CDN, nothing from the network
    again = build_study(*systems, tmp_path / "again", seed=3)
    assert read_study(again.folder) == key
    other = read_study(build_study(*systems, tmp_path / "other", seed=4).folder)
    assert [(t["name"], t["left"]) for t in other["trials"]] != [(t["name"], t["left"]) for t in trials]


def test_studies_that_cannot_be_built_are_refused(systems, tmp_path):
    a, b = systems
    with pytest.raises(InputError, match="no assets in .*0000_a_red_mug: expected folders holding meta.json"):
        build_study(a, a / "assets" / NAMES[0], tmp_path / "s0")  # an asset folder is not a folder of assets
    _write_asset(tmp_path / "d" / "another_name", "a red mug", (0, 0, 0))
    with pytest.raises(InputError, match="no asset name in common"):
        build_study(a, tmp_path / "d", tmp_path / "s0")
    _write_asset(tmp_path / "c" / NAMES[0], "another prompt", (0, 0, 0))
    with pytest.raises(InputError, match="1 pairs have different prompts, e.g. 0000_a_red_mug: 'a red mug' vs"):
        build_study(a, tmp_path / "c", tmp_path / "s1")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no assets in .*empty: expected folders holding meta.json"):
        build_study(a, tmp_path / "empty", tmp_path / "s2")
    build_study(a, b, tmp_path / "s3")
    with pytest.raises(InputError, match="not empty"):
        build_study(a, b, tmp_path / "s3")
    (tmp_path / "s3" / "votes").mkdir()
    (tmp_path / "s3" / "votes" / "p-1.json").write_text("{}")
    with pytest.raises(InputError, match="holds votes"):
        build_study(a, b, tmp_path / "s3", overwrite=True)
    assert not (tmp_path / "s0").exists() and not (tmp_path / "s1").exists()


def test_wilson_intervals_match_published_values():
    assert wilson_interval(8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert wilson_interval(0, 5) == pytest.approx((0.0, 0.4345), abs=1e-4)
    lo, hi = wilson_interval(50, 100)
    assert lo == pytest.approx(1 - hi) and hi == pytest.approx(0.5961, abs=1e-4)


def _votes(study_dir: Path, participant: str, choose) -> dict:
    """A participant's record choosing ``choose(trial, question) -> 'left' | 'right'`` on every trial."""
    key = read_study(study_dir)
    votes = [{"trial": t["id"], "question": q["id"], "choice": choose(t, q["id"])}
             for t in key["trials"] for q in key["questions"]]  # fmt: skip
    return {"study_id": key["study_id"], "participant": participant, "votes": votes}


def test_the_report_maps_sides_back_to_systems_and_counts_each_answer_once(study, tmp_path, capsys):
    key = read_study(study)
    a_left = sum(t["left"] == "A" for t in key["trials"])
    always_a = _votes(study, "p-1", lambda t, q: "left" if t["left"] == "A" else "right")
    always_left = _votes(study, "p-2", lambda t, q: "left" if q == "preference" else "right")
    for record in (always_a, always_left):
        (tmp_path / f"{record['participant']}.json").write_text(json.dumps(record))
    report = study_report(study, [tmp_path, tmp_path / "p-1.json"])  # p-1 read twice: counted once
    assert (report.participants, report.files) == (2, 3)
    preference, alignment = report.questions
    n = len(NAMES)
    assert (preference.a_wins, preference.b_wins) == (n + a_left, n - a_left)
    assert (alignment.a_wins, alignment.b_wins) == (n + (n - a_left), a_left)
    assert preference.a_rate == pytest.approx((n + a_left) / (2 * n))
    assert preference.ci95 == pytest.approx(wilson_interval(n + a_left, 2 * n))
    assert preference.left_rate == pytest.approx((a_left + n) / (2 * n))
    report_json = tmp_path / "r.json"
    _, out = _run(["sbs", "report", str(study), str(tmp_path / "p-1.json"), "--json", str(report_json)], capsys)
    assert f"| Which object do you like more? | {n} | {n} | 0 | 100.0% |" in out
    assert json.loads(report_json.read_text())["questions"][0]["a_wins"] == n
    other = {**always_a, "study_id": "0" * 16}
    (tmp_path / "other.json").write_text(json.dumps(other))
    with pytest.raises(InputError, match="other.json: votes of another study"):
        study_report(study, [tmp_path / "other.json"])
    bad = _votes(study, "p-3", lambda t, q: "middle")
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(InputError, match="bad.json: vote 1 is not a known trial, question and left/right choice"):
        study_report(study, [tmp_path / "bad.json"])
    empty = study_report(study, [])
    assert empty.questions[0].a_rate is None and empty.questions[0].ci95 is None


def _run(args, capsys):
    with pytest.raises(SystemExit) as e:
        main(args)
    captured = capsys.readouterr()
    assert e.value.code == 0, captured.err
    return e.value.code, captured.out


def test_the_commands_build_and_report(systems, tmp_path, capsys):
    a, b = systems
    _, out = _run(["sbs", str(a), str(b), "-o", str(tmp_path / "s"), "--seed", "1"], capsys)
    assert f"wrote a study of {len(NAMES)} pairs" in out and "1 of A, 0 of B" in out
    assert read_study(tmp_path / "s")["seed"] == 1 and (tmp_path / "s" / "index.html").is_file()
    _, out = _run(["sbs", "build", str(a), str(b), "-o", str(tmp_path / "t")], capsys)
    assert "wrote a study" in out
    _, out = _run(["sbs", "report", str(tmp_path / "s")], capsys)
    assert "0 participants, 0 vote files" in out and "| Which video matches the text better? | 0 |" in out
    with pytest.raises(SystemExit) as e:
        main(["sbs", str(a), str(b), "-o", str(tmp_path / "s")])
    assert e.value.code == 2 and "not empty" in capsys.readouterr().err


@pytest.mark.parametrize(("args", "expected"), [(["sbs", "--help"], "report"), (["sbs", "report"], "participants")])
def test_the_commands_import_no_torch(study, args, expected):
    """`fourview sbs` needs no torch: listing and reporting start without importing it."""
    code = (
        "import sys\nfrom fourview.cli import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "print('torch' in sys.modules)"
    )
    argv = [*args, str(study)] if args[-1] == "report" else args
    out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and expected in out.stdout, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"


@pytest.fixture
def server(study):
    """The study's server on a free port of 127.0.0.1, in a thread; yields its URL."""
    httpd = make_server(study, "127.0.0.1", 0)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    for vote in (study / "votes").glob("*.json"):
        vote.unlink()  # the module's study stays without votes for the next test


def _request(url: str, data: bytes | None = None) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, method="POST" if data else "GET")) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@pytest.mark.enable_socket
def test_the_server_serves_the_page_and_media_but_not_the_key_and_keeps_valid_votes(server, study):
    status, page = _request(server + "/")
    assert status == 200 and b'id="study"' in page
    assert _request(server + "/media/t000-1.gif") == (200, (study / "media" / "t000-1.gif").read_bytes())
    assert _request(server + "/study.json")[0] == 404 and _request(server + "/votes/")[0] == 404
    assert _request(server + "/media/../study.json")[0] == 404
    status, body = _request(server + "/votes", b"not json")
    assert status == 400
    status, body = _request(server + "/votes", json.dumps({**_votes(study, "../x", lambda t, q: "left")}).encode())
    assert status == 400 and b"participant must be" in body
    record = _votes(study, "p-9", lambda t, q: "right")
    status, body = _request(server + "/votes", json.dumps(record).encode())
    assert status == 200 and json.loads(body) == {"saved": "votes/p-9.json"}
    assert json.loads((study / "votes" / "p-9.json").read_text()) == record
    assert study_report(study).participants == 1  # the study's votes/ by default


# -- the page in a real browser -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    downloads = tmp_path_factory.mktemp("downloads")
    driver = start_chromium(tmp_path_factory.mktemp("chromium-profile"), downloads)
    driver.downloads = downloads
    yield driver
    driver.quit()


def _click_through(driver, key: dict, choose) -> Path:
    """Answer every pair with ``choose(trial, question)``; returns the downloaded votes file."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    trials = {t["id"]: t for t in key["trials"]}
    driver.find_element(By.ID, "start").click()
    for k in range(len(trials)):
        assert driver.find_element(By.ID, "progress").text == f"Pair {k + 1} of {len(trials)}"
        trial = trials[driver.find_element(By.ID, "trial").get_attribute("data-trial")]
        assert driver.find_element(By.ID, "prompt").text == trial["prompt"]
        left = driver.find_element(By.CSS_SELECTOR, "#media-left img")
        WebDriverWait(driver, 10).until(lambda d, e=left: d.execute_script("return arguments[0].naturalWidth", e))
        assert left.get_attribute("src").endswith(trial["media"][0])
        assert not driver.find_element(By.ID, "next").is_enabled()
        for question in ("preference", "alignment"):
            driver.find_element(By.ID, f"q-{question}-{choose(trial, question)}").click()
        driver.find_element(By.ID, "next").click()
    link = driver.find_element(By.ID, "download")
    WebDriverWait(driver, 10).until(lambda d: link.is_displayed())
    name = link.get_attribute("download")
    link.click()
    path = driver.downloads / name
    deadline = time.monotonic() + 30
    while not path.is_file() or any(driver.downloads.glob("*.crdownload")):
        assert time.monotonic() < deadline, f"{name} was not downloaded"
        time.sleep(0.1)
    return path


@pytest.mark.enable_socket  # the study's server, chromedriver and chromium on 127.0.0.1 only
def test_the_page_clicked_through_in_chromium_gives_the_votes_the_report_counts(browser, server, study, capsys):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    key = read_study(study)
    n, a_left = len(key["trials"]), sum(t["left"] == "A" for t in key["trials"])
    # Participant 1, on the server: prefers A's object; says the left video matches the text better.
    browser.get(server + "/")
    assert browser.title == "Which 3D object is better?"
    served = _click_through(browser, key, lambda t, q: ("left" if t["left"] == "A" else "right") if q == "preference"
                            else "left")  # fmt: skip
    saved = browser.find_element(By.ID, "saved")
    WebDriverWait(browser, 10).until(lambda d: saved.get_attribute("data-saved"))
    assert saved.get_attribute("data-saved") == "yes", saved.text
    (posted,) = (study / "votes").glob("*.json")
    assert json.loads(posted.read_text())["votes"] == json.loads(served.read_text())["votes"]
    # Participant 2, the page opened as a file: B everywhere; the votes are only in the download.
    browser.get((study / "index.html").as_uri())
    downloaded = _click_through(browser, key, lambda t, q: "left" if t["left"] == "B" else "right")
    assert browser.find_element(By.ID, "saved").get_attribute("data-saved") == "no"
    assert len(list((study / "votes").glob("*.json"))) == 1
    # The report over both (and the served one again, as its download): each answer counted once.
    report = study_report(study, [study / "votes", downloaded, served])
    preference, alignment = report.questions
    assert report.participants == 2
    assert (preference.a_wins, preference.b_wins) == (n, n)
    assert (alignment.a_wins, alignment.b_wins) == (a_left, n + (n - a_left))
    assert alignment.left_rate == pytest.approx((2 * n - a_left) / (2 * n))
    _, out = _run(["sbs", "report", str(study), str(served)], capsys)
    assert f"| Which object do you like more? | {n} | {n} | 0 | 100.0% |" in out
