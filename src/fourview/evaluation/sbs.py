"""Side-by-side studies (`fourview sbs`): people compare two systems' turntables of the same prompts.

The seed's evaluation method. Two folders of assets made from the same prompts (`fourview bench
text` outputs, `fourview batch` outputs, or any folder of asset folders holding ``meta.json``
with the prompt and a turntable) are paired by asset name. `build_study` writes a study folder:

    index.html       the page: one trial per pair, the two turntables side by side, the prompt,
                     and the two `QUESTIONS`, each answered "left" or "right"; self-contained
                     (no network, no CDN: the page, its script and style in one file, the media
                     beside it); the trials' public data is embedded, not the systems' names
    media/           the turntables, named by trial and side only (``t003-1.gif`` = trial 3, left)
    study.json       the key: the two systems' folders, the seed, and per trial which system is
                     on the left; kept out of the page and never served
    votes/           votes posted to `make_server` (one file per participant, the latest wins)

Order: the pairs are shuffled and each pair's left side drawn with a generator seeded by
``seed`` (`numpy.random.default_rng`); the draws are recorded in study.json, so a study is
rebuilt identically from the same folders and seed.

Votes: the page keeps every answer as ``{"trial", "question", "choice": "left" | "right"}`` and,
at the end, offers them as a JSON file to download; when the page came from `make_server`
(``fourview sbs serve STUDY``) it also posts them to ``/votes``. `study_report` reads vote files
(and folders of them), keeps one answer per participant, trial and question (the last read), maps
left/right back to A/B with the key, and gives each question's win rate of A over B with a 95 %
Wilson score interval (`wilson_interval`), and how often the left side won (a check for position
bias).
"""

from __future__ import annotations

import hashlib
import http.server
import json
import math
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np

from fourview.atomic import atomic_folder, check_output_folder, write_text_atomic
from fourview.errors import InputError

QUESTIONS: tuple[tuple[str, str], ...] = (
    ("preference", "Which object do you like more?"),
    ("alignment", "Which video matches the text better?"),
)
"""The questions of every trial: id and the text shown."""
TURNTABLE_FILES: tuple[str, ...] = ("turntable.mp4", "turntable.webm", "turntable.gif")
"""An asset's turntable, the first of these found (`Asset.save` writes the GIF)."""
PAGE: Path = Path(__file__).resolve().parent / "sbs_page" / "index.html"
"""The page template; its ``/*STUDY*/`` placeholder receives the trials' public data."""
STUDY_FILE = "study.json"
VOTES_DIR = "votes"
MAX_VOTES_BYTES = 1 << 20
"""Largest vote file the server accepts."""
PARTICIPANT = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""Participant ids the page makes and the server accepts as file names."""
Z_95 = 1.959963984540054
"""The standard normal quantile of a two-sided 95 % interval."""


@dataclass(frozen=True)
class StudyAsset:
    """One asset a study can show: its folder's name, its prompt and its turntable file."""

    name: str
    prompt: str
    turntable: Path


@dataclass(frozen=True)
class Study:
    """What `build_study` wrote.

    Attributes:
        folder: the study folder.
        trials: how many pairs it shows.
        only_a: assets of A without a partner in B (not shown).
        only_b: assets of B without a partner in A (not shown).
    """

    folder: Path
    trials: int
    only_a: list[str]
    only_b: list[str]


@dataclass(frozen=True)
class QuestionResult:
    """One question's outcome over every vote (`study_report`).

    Attributes:
        question: its id.
        text: its text.
        a_wins: votes for system A.
        b_wins: votes for system B.
        a_rate: ``a_wins / (a_wins + b_wins)``, None without votes.
        ci95: the 95 % Wilson score interval of ``a_rate``, None without votes.
        left_rate: share of votes for the left side (0.5 without position bias), None without votes.
    """

    question: str
    text: str
    a_wins: int
    b_wins: int
    a_rate: float | None
    ci95: tuple[float, float] | None
    left_rate: float | None

    @property
    def votes(self) -> int:
        return self.a_wins + self.b_wins


@dataclass(frozen=True)
class StudyReport:
    """Win rates of a study (`study_report`).

    Attributes:
        study_id: the study's id.
        systems: ``{"A": folder, "B": folder}``.
        participants: participants with at least one vote counted.
        files: vote files read.
        questions: per question, in `QUESTIONS` order.
    """

    study_id: str
    systems: dict[str, str]
    participants: int
    files: int
    questions: list[QuestionResult]


def find_assets(folder: str | Path) -> dict[str, StudyAsset]:
    """The assets of ``folder`` with a prompt and a turntable: its sub-folders, or those of ``folder/assets``.

    Raises:
        InputError: not a folder, or no such asset in it.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"not a folder of assets: {folder}")
    root = folder / "assets" if (folder / "assets").is_dir() else folder
    found: dict[str, StudyAsset] = {}
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        turntable = next((sub / n for n in TURNTABLE_FILES if (sub / n).is_file()), None)
        if turntable is None or not (sub / "meta.json").is_file():
            continue
        try:
            prompt = json.loads((sub / "meta.json").read_text(encoding="utf-8")).get("prompt")
        except (OSError, json.JSONDecodeError, AttributeError) as error:
            raise InputError(f"cannot read {sub / 'meta.json'}: {error}") from None
        if isinstance(prompt, str) and prompt.strip():
            found[sub.name] = StudyAsset(sub.name, prompt, turntable)
    if not found:
        raise InputError(
            f"no assets in {root}: expected folders holding meta.json with a prompt and a turntable "
            f"({' or '.join(TURNTABLE_FILES)}; `fourview bench text` and `fourview batch` write them)"
        )
    return found


def build_study(
    a_dir: str | Path,
    b_dir: str | Path,
    out: str | Path,
    seed: int = 0,
    title: str = "Which 3D object is better?",
    overwrite: bool = False,
) -> Study:
    """Pair the assets of ``a_dir`` and ``b_dir`` by name and write the study folder (the module docstring).

    Raises:
        InputError: a folder without assets, no pair, a pair whose prompts differ, a bad seed, or an
            output folder that is not empty (or, with ``overwrite``, that holds votes).
    """
    if seed < 0:
        raise InputError(f"seed must be >= 0, got {seed}")
    out = Path(out)
    check_output_folder(out, overwrite)
    if any((out / VOTES_DIR).glob("*.json")):
        raise InputError(f"{out} holds votes ({out / VOTES_DIR}); move them away before rebuilding the study")
    a, b = find_assets(a_dir), find_assets(b_dir)
    names = sorted(set(a) & set(b))
    if not names:
        raise InputError(f"{a_dir} and {b_dir} have no asset name in common: nothing to compare")
    differ = [n for n in names if a[n].prompt != b[n].prompt]
    if differ:
        n = differ[0]
        raise InputError(f"{len(differ)} pairs have different prompts, e.g. {n}: {a[n].prompt!r} vs {b[n].prompt!r}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(names))
    a_left = rng.random(len(names)) < 0.5
    trials, public = [], []
    with atomic_folder(out, overwrite) as tmp:
        (tmp / "media").mkdir()
        for k, index in enumerate(order):
            name = names[index]
            left, right = (a[name], b[name]) if a_left[k] else (b[name], a[name])
            media = []
            for side, asset in ((1, left), (2, right)):
                path = f"media/t{k:03d}-{side}{asset.turntable.suffix}"
                shutil.copyfile(asset.turntable, tmp / path)
                media.append(path)
            trial_id = f"t{k:03d}"
            trials.append({"id": trial_id, "name": name, "prompt": a[name].prompt, "left": "A" if a_left[k] else "B",
                           "media": media})  # fmt: skip
            public.append({"id": trial_id, "prompt": a[name].prompt, "media": media})
        key = {
            "seed": seed,
            "systems": {"A": str(Path(a_dir).resolve()), "B": str(Path(b_dir).resolve())},
            "questions": [{"id": q, "text": t} for q, t in QUESTIONS],
            "trials": trials,
            "only_a": sorted(set(a) - set(b)),
            "only_b": sorted(set(b) - set(a)),
        }
        study_id = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        write_text_atomic(tmp / STUDY_FILE, json.dumps({"study_id": study_id, **key}, indent=1) + "\n")
        page = {"study_id": study_id, "title": title, "questions": key["questions"], "trials": public}
        write_text_atomic(tmp / "index.html", render_page(page))
    return Study(out, len(trials), key["only_a"], key["only_b"])


def render_page(public: dict) -> str:
    """The page with the trials' public data embedded (``<`` escaped, so no text can close the script)."""
    data = json.dumps(public).replace("<", "\\u003c")
    return PAGE.read_text(encoding="utf-8").replace("/*STUDY*/", data)


def read_study(folder: str | Path) -> dict:
    """The study's key (``study.json``).

    Raises:
        InputError: no study there.
    """
    path = Path(folder) / STUDY_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise InputError(f"not a study folder (`fourview sbs A B -o STUDY` writes one): cannot read {path}: "
                         f"{error}") from None  # fmt: skip


def check_votes(record: object, study: dict, where: str) -> dict:
    """A vote record checked against the study: its id, participant, trials, questions and choices.

    Raises:
        InputError: anything that does not belong to the study, naming ``where``.
    """
    if not isinstance(record, dict):
        raise InputError(f"{where}: expected a JSON object of votes")
    if record.get("study_id") != study["study_id"]:
        raise InputError(f"{where}: votes of another study ({record.get('study_id')!r}, not {study['study_id']!r})")
    participant = record.get("participant")
    if not isinstance(participant, str) or not PARTICIPANT.fullmatch(participant):
        raise InputError(f"{where}: the participant must be 1-64 of A-Z a-z 0-9 _ -, got {participant!r}")
    votes = record.get("votes")
    if not isinstance(votes, list):
        raise InputError(f"{where}: 'votes' must be a list")
    trials = {t["id"] for t in study["trials"]}
    questions = {q["id"] for q in study["questions"]}
    for i, vote in enumerate(votes):
        ok = isinstance(vote, dict) and vote.get("trial") in trials and vote.get("question") in questions
        if not ok or vote.get("choice") not in ("left", "right"):
            raise InputError(f"{where}: vote {i + 1} is not a known trial, question and left/right choice: {vote!r}")
    return record


def read_votes(paths: list[str | Path], study: dict) -> list[dict]:
    """The vote records of ``paths`` (files, or folders of ``*.json``), in the order given (folders: by name).

    Raises:
        InputError: a path that does not exist, a file that is not a vote record of the study.
    """
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(path.glob("*.json"))
        elif path.is_file():
            files.append(path)
        else:
            raise InputError(f"no vote file or folder at {path}")
    records = []
    for file in files:
        try:
            record = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise InputError(f"cannot read the votes {file}: {error}") from None
        records.append(check_votes(record, study, str(file)))
    return records


def wilson_interval(wins: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``wins / n`` (``n`` > 0) at the normal quantile ``z``."""
    p = wins / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def study_report(folder: str | Path, votes: list[str | Path] | None = None) -> StudyReport:
    """Win rates of A over B per question (the module docstring).

    Args:
        folder: the study folder.
        votes: vote files or folders [default: the study's ``votes/``].

    Raises:
        InputError: no study, or a vote file that does not belong to it.
    """
    study = read_study(folder)
    paths = votes if votes else ([Path(folder) / VOTES_DIR] if (Path(folder) / VOTES_DIR).is_dir() else [])
    records = read_votes(paths, study)
    left_system = {t["id"]: t["left"] for t in study["trials"]}
    answers: dict[tuple[str, str, str], str] = {}  # (participant, trial, question) -> choice; the last read wins
    for record in records:
        for vote in record["votes"]:
            answers[record["participant"], vote["trial"], vote["question"]] = vote["choice"]
    results = []
    for question in study["questions"]:
        chosen = [(trial, choice) for (_, trial, q), choice in answers.items() if q == question["id"]]
        a_wins = sum((choice == "left") == (left_system[trial] == "A") for trial, choice in chosen)
        n = len(chosen)
        left = sum(choice == "left" for _, choice in chosen)
        results.append(QuestionResult(
            question["id"], question["text"], a_wins, n - a_wins, a_wins / n if n else None,
            wilson_interval(a_wins, n) if n else None, left / n if n else None,
        ))  # fmt: skip
    participants = len({p for p, _, _ in answers})
    return StudyReport(study["study_id"], study["systems"], participants, len(records), results)


def report_markdown(report: StudyReport) -> str:
    """The report as Markdown: the systems, then one row per question."""
    lines = [
        f"Study {report.study_id}: A = {report.systems['A']}, B = {report.systems['B']}; {report.participants} "
        f"participants, {report.files} vote files.",
        "",
        "| question | votes | A wins | B wins | A win rate | 95% CI (Wilson) | left side chosen |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for q in report.questions:
        rate = "n/a" if q.a_rate is None else f"{q.a_rate:.1%}"
        ci = "n/a" if q.ci95 is None else f"{q.ci95[0]:.1%} - {q.ci95[1]:.1%}"
        left = "n/a" if q.left_rate is None else f"{q.left_rate:.1%}"
        lines.append(f"| {q.text} | {q.votes} | {q.a_wins} | {q.b_wins} | {rate} | {ci} | {left} |")
    return "\n".join(lines) + "\n"


class _StudyHandler(http.server.BaseHTTPRequestHandler):
    """GET the page and its media (nothing else: not the key), POST a participant's votes to ``/votes``."""

    folder: Path
    study: dict
    server_version = "fourview-sbs"
    TYPES = {".html": "text/html; charset=utf-8", ".gif": "image/gif", ".mp4": "video/mp4", ".webm": "video/webm"}

    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        path = unquote(urlsplit(self.path).path)
        if path in ("/", "/index.html"):
            file = self.folder / "index.html"
        elif re.fullmatch(r"/media/t\d{3,}-[12]\.(gif|mp4|webm)", path):
            file = self.folder / path.lstrip("/")
        else:
            file = None
        if file is None or not file.is_file():
            self._send(404, b'{"error": "not found"}')
            return
        self._send(200, file.read_bytes(), self.TYPES[file.suffix])

    def do_POST(self) -> None:  # noqa: N802
        if urlsplit(self.path).path != "/votes":
            self._send(404, b'{"error": "not found"}')
            return
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 < length <= MAX_VOTES_BYTES:
            self._send(413, b'{"error": "votes missing or too large"}')
            return
        try:
            record = check_votes(json.loads(self.rfile.read(length)), self.study, "posted votes")
        except (json.JSONDecodeError, UnicodeDecodeError, InputError) as error:
            self._send(400, json.dumps({"error": str(error)}).encode())
            return
        name = f"{record['participant']}.json"
        write_text_atomic(self.folder / VOTES_DIR / name, json.dumps(record, indent=1) + "\n")
        self._send(200, json.dumps({"saved": f"{VOTES_DIR}/{name}"}).encode())

    def _send(self, status: int, body: bytes, kind: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - http.server's signature
        pass  # quiet: the command prints its address; votes are files


def make_server(folder: str | Path, host: str = "127.0.0.1", port: int = 8000) -> http.server.ThreadingHTTPServer:
    """An HTTP server of the study (not started: call ``serve_forever``); port 0 picks a free one.

    Raises:
        InputError: no study in ``folder``, or the address cannot be bound.
    """
    folder = Path(folder).resolve()
    study = read_study(folder)
    (folder / VOTES_DIR).mkdir(exist_ok=True)
    handler = type("StudyHandler", (_StudyHandler,), {"folder": folder, "study": study})
    try:
        return http.server.ThreadingHTTPServer((host, port), handler)
    except OSError as error:
        raise InputError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
