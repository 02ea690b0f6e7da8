from __future__ import annotations

# Integration tests of the media engines (voice cloning, dubbing, AI stories, video
# translation, animated talking heads) on real recordings and a real portrait from
# ../shared/data.  They need the 'engines' extra (plus Debian espeak-ng and Apertium) and
# skip with a reason when something is missing.
#
# Run: pytest -q tests/integration/test_engines_media.py   (about 2-3 minutes on 2 cores;
# add -s to see the measured real-time factors).
import importlib.util
import itertools
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import Recorder, normalize, wer

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # pytest's rootdir is not on sys.path without a conftest
    sys.path.insert(0, str(REPO))

DATA = REPO.parent / "shared" / "data"
SPEECH = DATA / "speech"
PORTRAIT = DATA / "images" / "astronaut.png"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (SPEECH / "librivox-0870.wav").is_file() or not PORTRAIT.is_file(),
        reason=f"shared test data not found in {DATA} (it lives in ../shared/data beside the repo)",
    ),
]

for _module, _hint in (
    ("faster_whisper", "faster-whisper is not installed (pip install '.[engines]')"),
    ("piper", "piper-tts is not installed (pip install '.[engines]')"),
    ("pyworld", "pyworld is not installed (pip install '.[engines]')"),
    ("cv2", "opencv-python-headless is not installed (pip install '.[engines]')"),
    ("imageio_ffmpeg", "imageio-ffmpeg is not installed (pip install '.[engines]')"),
    ("llama_cpp", "llama-cpp-python is not installed (pip install '.[engines]')"),
    ("jiwer", "jiwer is not installed (pip install '.[dev]')"),
):
    if importlib.util.find_spec(_module) is None:
        pytest.skip(_hint, allow_module_level=True)

import av  # noqa: E402
import numpy as np  # noqa: E402

from processors.engines import (  # noqa: E402
    ALL_ENGINE_TYPES,
    DubbingEngine,
    EngineCancelled,
    EngineContext,
    EngineResult,
    InvalidInput,
    PiperEngine,
    StoryEngine,
    TalkingHeadEngine,
    VideoTranslationEngine,
    VoiceCloningEngine,
    WhisperEngine,
    build_engines,
    describe_engines,
    supported_pair,
    unsupported_pair_reason,
)
from processors.engines.dubbing import apertium_path, split_segments  # noqa: E402
from processors.engines.media import ffmpeg_exe  # noqa: E402
from processors.engines.stories import trim_to_length  # noqa: E402
from processors.engines.tts import espeak_path  # noqa: E402
from processors.engines.video import Cue, make_cues, parse_srt, to_srt  # noqa: E402
from processors.engines.voice import measure_f0_median  # noqa: E402

needs_espeak = pytest.mark.skipif(espeak_path() is None, reason="espeak-ng is not installed (apt-get install espeak-ng)")
needs_apertium = pytest.mark.skipif(
    apertium_path() is None or espeak_path() is None,
    reason="apertium/espeak-ng are not installed (apt-get install apertium apertium-eng-spa apertium-fr-es espeak-ng)",
)

REFERENCES = {
    "librivox-0870": "and mister john dashwood had then leisure to consider how much there "
    "might be prudently in his power to do for them",
    "librivox-0880": "he was not an ill disposed young man",
}
HEAVY_MODULES = {
    "numpy",
    "cv2",
    "av",
    "pyworld",
    "llama_cpp",
    "faster_whisper",
    "ctranslate2",
    "piper",
    "onnxruntime",
    "imageio_ffmpeg",
}


def make_ctx(
    work_dir: Path,
    parameters: dict[str, Any] | None = None,
    files: dict[str, Path] | None = None,
    should_stop: Callable[[], bool] | None = None,
    recorder: Recorder | None = None,
) -> EngineContext:
    rec = recorder or Recorder()
    return EngineContext(
        job_id=work_dir.name,
        parameters=parameters or {},
        input_files=dict(files or {}),
        work_dir=work_dir,
        report=rec.report,
        log=rec.log,
        should_stop=should_stop or (lambda: False),
    )


def media_streams(path: Path) -> dict[str, Any]:
    """Stream kinds, durations and codecs of a media file (via PyAV)."""
    with av.open(str(path)) as container:
        streams = list(container.streams)
        info: dict[str, Any] = {
            "kinds": sorted(s.type for s in streams),
            "duration": float(container.duration) / av.time_base if container.duration else 0.0,
            "codecs": {s.type: s.codec_context.name for s in streams},
            "languages": {s.type: s.metadata.get("language") for s in streams},
        }
        for stream in streams:
            if stream.duration is not None and stream.time_base is not None:
                info[f"{stream.type}_duration"] = float(stream.duration * stream.time_base)
    return info


def wav_seconds(path: Path) -> float:
    with av.open(str(path)) as container:
        return float(container.duration or 0) / av.time_base


def read_mono(path: Path, rate: int = 16000) -> np.ndarray:
    """Decode any audio to mono float32 at ``rate`` with ffmpeg (test helper)."""
    out = subprocess.run(
        [ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(path), "-vn", "-ac", "1", "-ar", str(rate), "-f", "f32le", "-"],
        capture_output=True,
        check=True,
    ).stdout
    return np.frombuffer(out, dtype="<f4").astype(np.float64)


def stop_after_progress(rec: Recorder, minimum: int = 1) -> tuple[Callable[[], bool], list[float]]:
    """A should_stop that turns True once progress >= minimum; records the progress it
    fired at."""
    fired: list[float] = []

    def should_stop() -> bool:
        if any(p >= minimum for p, _ in rec.reports):
            if not fired:
                fired.append(max(p for p, _ in rec.reports))
            return True
        return False

    return should_stop, fired


def assert_cancel_prompt(
    run: Callable[[EngineContext], EngineResult], work_dir: Path, params: dict[str, Any], files: dict[str, Path], minimum: int = 1
) -> None:
    rec = Recorder()
    should_stop, fired = stop_after_progress(rec, minimum)
    with pytest.raises(EngineCancelled) as info:
        run(make_ctx(work_dir, params, files, should_stop=should_stop, recorder=rec))
    assert info.value.code == "cancelled"
    assert fired, "the engine never reported progress before finishing"
    # stopped at a checkpoint before completing: progress never reached 100
    assert max(p for p, _ in rec.reports) < 100, rec.reports
    leftovers = [p.name for p in work_dir.iterdir() if not p.name.startswith(".")] if work_dir.exists() else []
    assert not leftovers, f"a cancelled job left result files: {leftovers}"


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    built = build_engines(ALL_ENGINE_TYPES, tmp_path_factory.mktemp("models"))
    yield built
    for engine in built.values():
        engine.close()


@pytest.fixture(scope="module")
def stt(engines: dict[str, Any]) -> WhisperEngine:
    engine: WhisperEngine = engines["stt"]
    engine.load()
    return engine


@pytest.fixture(scope="module")
def tts(engines: dict[str, Any]) -> PiperEngine:
    engine: PiperEngine = engines["tts"]
    engine.load()
    return engine


@pytest.fixture(scope="module")
def voice(engines: dict[str, Any], tts: PiperEngine) -> VoiceCloningEngine:
    engine: VoiceCloningEngine = engines["voice_cloning"]
    return engine


@pytest.fixture(scope="module")
def dubbing(engines: dict[str, Any], stt: WhisperEngine, tts: PiperEngine) -> DubbingEngine:
    engine: DubbingEngine = engines["dubbing"]
    return engine


@pytest.fixture(scope="module")
def video(engines: dict[str, Any], stt: WhisperEngine) -> VideoTranslationEngine:
    engine: VideoTranslationEngine = engines["video_translation"]
    return engine


@pytest.fixture(scope="module")
def stories(engines: dict[str, Any]) -> StoryEngine:
    engine: StoryEngine = engines["ai_stories"]
    engine.load()
    return engine


@pytest.fixture(scope="module")
def heads(engines: dict[str, Any]) -> TalkingHeadEngine:
    engine: TalkingHeadEngine = engines["animated_talking_heads"]
    engine.load()
    return engine


@pytest.fixture(scope="module")
def female_reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ~6 s recording of a clearly different, higher voice (espeak-ng's female variant)."""
    if espeak_path() is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    path = tmp_path_factory.mktemp("voices") / "reference-female.wav"
    text = "The rainbow is a division of white light into many beautiful colors. These take the shape of a long round arch."
    subprocess.run([str(espeak_path()), "-v", "en+f3", "-w", str(path), text], check=True, capture_output=True)
    return path


@pytest.fixture(scope="module")
def sample_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 7.1 s MP4 (H.264 colour card 320x240 + the librivox-0870 speech as AAC)."""
    path = tmp_path_factory.mktemp("video") / "lecture.mp4"
    subprocess.run(
        [
            ffmpeg_exe(),
            "-nostdin",
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "color=c=navy:s=320x240:r=25:d=7.1",
            "-i",
            str(SPEECH / "librivox-0870.wav"),
            "-shortest",
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            str(path),
        ],
        check=True,
        capture_output=True,
    )
    return path


@pytest.fixture
def corrupt_wav(tmp_path: Path) -> Path:
    path = tmp_path / "broken.wav"
    path.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00garbage" * 50)
    return path


# -- discovery -------------------------------------------------------------------------------


def test_describe_all_types_is_cheap(tmp_path: Path) -> None:
    described = describe_engines(tmp_path / "models", ALL_ENGINE_TYPES)
    assert [d["type"] for d in described] == list(ALL_ENGINE_TYPES)
    assert not (tmp_path / "models").exists(), "describe_engines must not assemble models"
    by_type = {d["type"]: d for d in described}
    for entry in described:
        assert {"type", "engine", "available", "languages", "voices"} <= set(entry)
        assert entry["available"] is True, (entry["type"], entry.get("missing"))
    assert by_type["ai_stories"]["languages"] == ["en"]
    if apertium_path() is not None:
        assert {"en", "es", "fr"} <= set(by_type["dubbing"]["languages"])
        assert {"en", "es", "fr"} <= set(by_type["video_translation"]["languages"])
    assert [d["type"] for d in describe_engines(tmp_path / "models")] == list(ALL_ENGINE_TYPES)  # every type by default
    with pytest.raises(ValueError, match="unknown engine type"):
        describe_engines(tmp_path / "models", ["ocr"])
    code = (
        "import sys, json; from pathlib import Path; from processors.engines import describe_engines, ALL_ENGINE_TYPES; "
        f"describe_engines(Path({str(tmp_path / 'models')!r}), ALL_ENGINE_TYPES); "
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({sorted(HEAVY_MODULES)!r}))))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True, timeout=300)
    assert json.loads(out.stdout) == []  # describing engines loads no model library


def test_build_engines_shares_one_whisper_and_one_piper(tmp_path: Path) -> None:
    built = build_engines(list(reversed(ALL_ENGINE_TYPES)), tmp_path)
    assert set(built) == set(ALL_ENGINE_TYPES)
    for engine_type, engine in built.items():
        assert engine.type == engine_type
    stt, tts = built["stt"], built["tts"]
    assert built["dubbing"].stt is stt and built["dubbing"].tts is tts  # type: ignore[attr-defined]
    assert built["video_translation"].dubbing is built["dubbing"]  # type: ignore[attr-defined]
    for name in ("voice_cloning", "ai_stories", "animated_talking_heads"):
        assert built[name].tts is tts  # type: ignore[attr-defined]
    alone = build_engines(["video_translation"], tmp_path)
    assert isinstance(alone["video_translation"], VideoTranslationEngine)
    assert not any(e.loaded for e in built.values())  # type: ignore[attr-defined]


def test_supported_pairs() -> None:
    if apertium_path() is not None:
        for source, target in [("en", "es"), ("en", "fr"), ("es", "fr"), ("fr", "es"), (None, "es"), ("en-US", "es-ES")]:
            assert supported_pair(source, target), unsupported_pair_reason(source, target)
    for source in ("es", "fr", "de", "ja", None):
        assert supported_pair(source, "en"), unsupported_pair_reason(source, "en")
    assert not supported_pair("en", "de")
    assert "'de'" in str(unsupported_pair_reason("en", "de"))
    assert not supported_pair("de", "es")
    assert "de->es" in str(unsupported_pair_reason("de", "es"))
    assert "nothing to translate" in str(unsupported_pair_reason("en", "en"))
    assert "required" in str(unsupported_pair_reason("en", None))
    assert "language code" in str(unsupported_pair_reason("en", "--help"))


# -- voice cloning ---------------------------------------------------------------------------


def test_voice_cloning_recording_moves_f0_and_stays_intelligible(
    voice: VoiceCloningEngine, stt: WhisperEngine, female_reference: Path, tmp_path: Path
) -> None:
    rec = Recorder()
    source = SPEECH / "librivox-0870.wav"
    result = voice.run(make_ctx(tmp_path / "job", {}, {"reference_file": female_reference, "input_file": source}, recorder=rec))
    assert result.files == [(tmp_path / "job" / "cloned.wav").resolve()]
    meta = result.meta
    medians = meta["f0_median_hz"]
    assert set(medians) == {"reference", "source", "output"}
    reference_f0 = measure_f0_median(read_mono(female_reference), 16000)
    source_f0 = measure_f0_median(read_mono(source), 16000)
    output_f0 = measure_f0_median(read_mono(result.files[0]), 16000)
    assert reference_f0 > 1.5 * source_f0, (reference_f0, source_f0)  # the voices really differ
    assert abs(output_f0 - reference_f0) / reference_f0 <= 0.10, (output_f0, reference_f0)
    assert abs(medians["output"] - output_f0) / output_f0 < 0.05
    assert medians["source"] == pytest.approx(source_f0, rel=0.1)
    assert set(meta["f0_range_hz"]) == {"reference", "source", "output"}
    assert 1.0 <= meta["spectral_warp"] <= 1.25  # male -> female: formants move up
    assert wav_seconds(result.files[0]) == pytest.approx(7.1, abs=0.1)
    back = stt.run(make_ctx(tmp_path / "stt", {"language": "en"}, {"input_file": result.files[0]}))
    error = wer(REFERENCES["librivox-0870"], back.meta["transcript"])
    assert error <= 0.30, f"WER {error:.1%}: {back.meta['transcript']!r}"
    progress = [p for p, _ in rec.reports]
    assert progress == sorted(progress) and progress[-1] == 100
    assert {"analyzing", "converting"} <= {s for _, s in rec.reports}


def test_voice_cloning_text_in_a_recorded_voice(voice: VoiceCloningEngine, stt: WhisperEngine, tmp_path: Path) -> None:
    text = "My sister sells fresh bread and warm milk at the market every morning before the sun comes up."
    reference = SPEECH / "librivox-0870.wav"
    result = voice.run(make_ctx(tmp_path / "job", {"text": text}, {"reference_file": reference}))
    assert result.meta["source"] == "text"
    reference_f0 = measure_f0_median(read_mono(reference), 16000)
    output_f0 = measure_f0_median(read_mono(result.files[0]), 16000)
    assert abs(output_f0 - reference_f0) / reference_f0 <= 0.10, (output_f0, reference_f0)
    back = stt.run(make_ctx(tmp_path / "stt", {"language": "en"}, {"input_file": result.files[0]}))
    error = wer(text, back.meta["transcript"])
    assert error <= 0.30, f"WER {error:.1%}: {back.meta['transcript']!r}"


def test_voice_cloning_invalid_inputs(voice: VoiceCloningEngine, corrupt_wav: Path, tmp_path: Path) -> None:
    long_ref = SPEECH / "librivox-0870.wav"
    cases: list[tuple[dict[str, Any], dict[str, Path], str]] = [
        ({"text": "Hello there."}, {"reference_file": SPEECH / "cards-001.wav"}, "at least 3 s"),
        ({"text": "Hello there."}, {"reference_file": corrupt_wav}, "broken.wav"),
        ({}, {"reference_file": long_ref}, "needs parameter 'text'"),
        ({}, {"reference_file": long_ref, "input_file": corrupt_wav}, "broken.wav"),
        ({"text": "Hello."}, {}, "reference_file"),
        ({"text": "Hello.", "_max_input_duration_s": 5}, {"reference_file": long_ref}, "limit"),
        ({"text": 42}, {"reference_file": long_ref}, "must be a string"),
    ]
    for n, (params, files, message) in enumerate(cases):
        with pytest.raises(InvalidInput, match=message) as info:
            voice.run(make_ctx(tmp_path / f"job{n}", params, files))
        assert info.value.code == "invalid_input"


def test_voice_cloning_cancel(voice: VoiceCloningEngine, female_reference: Path, tmp_path: Path) -> None:
    files = {"reference_file": female_reference, "input_file": SPEECH / "librivox-0870.wav"}
    assert_cancel_prompt(voice.run, tmp_path / "job", {}, files, minimum=1)


# -- dubbing ---------------------------------------------------------------------------------


@needs_apertium
def test_dubbing_english_to_spanish(dubbing: DubbingEngine, stt: WhisperEngine, tmp_path: Path) -> None:
    rec = Recorder()
    source = SPEECH / "librivox-0870.wav"
    result = dubbing.run(make_ctx(tmp_path / "job", {"target_language": "es"}, {"input_file": source}, recorder=rec))
    work_dir = (tmp_path / "job").resolve()
    assert result.files == [work_dir / "dubbed.wav", work_dir / "dubbing.json"]
    meta = result.meta
    assert meta["source_language"] == "en" and meta["target_language"] == "es"
    assert meta["translation"] == "apertium:eng-spa" and meta["voice"] == "espeak-ng:es"
    assert meta["segments"]
    for segment in meta["segments"]:
        assert set(segment) == {"start", "end", "source_text", "target_text"}
        assert 0.0 <= segment["start"] < segment["end"] <= 7.2
        assert segment["source_text"] and segment["target_text"]
    joined = " ".join(s["source_text"] for s in meta["segments"])
    assert wer(REFERENCES["librivox-0870"], joined) <= 0.15
    assert "poder" in " ".join(s["target_text"] for s in meta["segments"]).lower()
    assert json.loads(result.files[1].read_text(encoding="utf-8")) == meta
    seconds = wav_seconds(result.files[0])
    assert abs(seconds - 7.1) / 7.1 <= 0.15, seconds
    back = stt.run(make_ctx(tmp_path / "stt", {}, {"input_file": result.files[0]}))
    assert back.meta["language"] == "es", back.meta["transcript"]
    stages = [s for _, s in rec.reports]
    assert stages.index("transcribing") < stages.index("translating") < stages.index("synthesizing")
    progress = [p for p, _ in rec.reports]
    assert progress == sorted(progress) and progress[-1] == 100


SPANISH = "Hola. Me llamo Pedro y vivo en Madrid."


def test_dubbing_spanish_speech_to_english_with_whisper_translate(
    dubbing: DubbingEngine, stt: WhisperEngine, tts: PiperEngine, tmp_path: Path
) -> None:
    if espeak_path() is None:
        pytest.skip("espeak-ng is not installed")
    spanish = tts.run(make_ctx(tmp_path / "es", {"text": SPANISH, "language": "es"}))
    result = dubbing.run(
        make_ctx(tmp_path / "job", {"target_language": "en", "source_language": "es"}, {"input_file": spanish.files[0]})
    )
    assert result.meta["translation"] == "whisper:translate" and result.meta["voice"] == "en_US-joe-medium"
    spanish_text = " ".join(s["source_text"] for s in result.meta["segments"]).lower()
    english = " ".join(s["target_text"] for s in result.meta["segments"])
    # Whisper base hears espeak-ng's robotic Spanish only roughly (and differently from run
    # to run, through its temperature fallback), so check the route and languages, not words.
    assert spanish_text.strip(), result.meta
    assert english.strip() and english.isascii(), english
    back = stt.run(make_ctx(tmp_path / "stt", {}, {"input_file": result.files[0]}))
    assert back.meta["language"] == "en", back.meta["transcript"]


def test_dubbing_invalid_inputs(dubbing: DubbingEngine, corrupt_wav: Path, tmp_path: Path) -> None:
    speech = {"input_file": SPEECH / "librivox-0880.wav"}
    cases: list[tuple[dict[str, Any], dict[str, Path], str]] = [
        ({"target_language": "de"}, speech, "not supported"),
        ({}, speech, "target_language"),
        ({"target_language": "es", "source_language": "en"}, {"input_file": corrupt_wav}, "broken.wav"),
        ({"target_language": "es"}, {}, "input_file"),
        ({"target_language": "es", "_max_input_duration_s": 2}, speech, "limit"),
        ({"target_language": "es", "original_volume": 3}, speech, "original_volume"),
    ]
    for n, (params, files, message) in enumerate(cases):
        with pytest.raises(InvalidInput, match=message):
            dubbing.run(make_ctx(tmp_path / f"job{n}", params, files))


@needs_apertium
def test_dubbing_cancel(dubbing: DubbingEngine, tmp_path: Path) -> None:
    assert_cancel_prompt(
        dubbing.run, tmp_path / "job", {"target_language": "es"}, {"input_file": SPEECH / "librivox-0870.wav"}, minimum=1
    )


def test_split_segments_at_sentence_ends() -> None:
    words = [
        {"start": 0.0, "end": 0.5, "word": "Hello"},
        {"start": 0.5, "end": 1.2, "word": "there."},
        {"start": 1.5, "end": 2.0, "word": "How"},
        {"start": 2.0, "end": 2.4, "word": "are"},
        {"start": 2.4, "end": 3.0, "word": "you?"},
    ]
    pieces = split_segments([{"start": 0.0, "end": 3.0, "text": "Hello there. How are you?", "words": words}])
    assert [(p.start, p.end, p.source_text) for p in pieces] == [(0.0, 1.2, "Hello there."), (1.5, 3.0, "How are you?")]


# -- ai stories ------------------------------------------------------------------------------


def english_share(text: str) -> float:
    common = {
        "the",
        "a",
        "and",
        "of",
        "to",
        "in",
        "was",
        "he",
        "she",
        "it",
        "his",
        "her",
        "that",
        "with",
        "they",
        "on",
        "for",
        "as",
        "had",
        "is",
    }
    words = normalize(text).split()
    return sum(w in common for w in words) / max(1, len(words))


def test_story_length_language_and_seed(stories: StoryEngine, tmp_path: Path) -> None:
    params = {"prompt": "a lighthouse keeper who befriends a whale", "length": 150, "seed": 7, "style": "gentle"}
    rec = Recorder()
    first = stories.run(make_ctx(tmp_path / "one", params, recorder=rec))
    meta = first.meta
    assert {"text", "words", "seed", "model"} <= set(meta)
    assert meta["seed"] == 7 and meta["model"] == "SmolLM2-135M-Instruct.Q4_1"
    assert 0.75 * 150 <= meta["words"] <= 1.25 * 150, meta["words"]
    assert meta["words"] == len(meta["text"].split())
    assert meta["text"].rstrip()[-1] in ".!?\"'”’)", meta["text"][-80:]
    assert english_share(meta["text"]) > 0.15, meta["text"][:200]
    assert first.files == [(tmp_path / "one" / "story.txt").resolve()]
    assert first.files[0].read_text(encoding="utf-8").strip() == meta["text"]
    generating = [p for p, s in rec.reports if s == "generating"]
    assert generating == sorted(generating) and len(set(generating)) >= 10 and generating[-1] == 100
    assert len([m for level, m in rec.logs if level == "info"]) >= 5  # streamed lines

    again = stories.run(make_ctx(tmp_path / "two", params))
    assert again.meta["text"] == meta["text"]
    other = stories.run(make_ctx(tmp_path / "three", {**params, "seed": 8}))
    assert other.meta["text"] != meta["text"]


def test_story_narrated(stories: StoryEngine, tts: PiperEngine, tmp_path: Path) -> None:
    result = stories.run(
        make_ctx(tmp_path / "job", {"prompt": "a cat who learns to sail", "length": 40, "seed": 1, "narrate": True})
    )
    assert [p.name for p in result.files] == ["story.txt", "story.wav"]
    assert 30 <= result.meta["words"] <= 50
    assert wav_seconds(result.files[1]) > 0.2 * result.meta["words"]
    assert result.meta["duration_seconds"] == pytest.approx(wav_seconds(result.files[1]), abs=0.05)


def test_story_invalid_parameters(stories: StoryEngine, tmp_path: Path) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({}, "prompt"),
        ({"prompt": "   "}, "prompt"),
        ({"prompt": "x", "length": 5}, "length"),
        ({"prompt": "x", "length": "long"}, "length"),
        ({"prompt": "x", "seed": -1}, "seed"),
        ({"prompt": "x", "narrate": "yes"}, "narrate"),
        ({"prompt": "x" * 3000}, "limit"),
    ]
    for n, (params, message) in enumerate(cases):
        with pytest.raises(InvalidInput, match=message):
            stories.run(make_ctx(tmp_path / f"job{n}", params))


def test_story_cancel(stories: StoryEngine, tmp_path: Path) -> None:
    assert_cancel_prompt(stories.run, tmp_path / "job", {"prompt": "a long journey", "length": 1000, "seed": 3}, {}, minimum=5)


def test_trim_to_length() -> None:
    text = "One two three. Four five six seven. Eight nine ten eleven twelve. Thirteen fourteen."
    assert trim_to_length(text, 8) == "One two three. Four five six seven."
    assert trim_to_length("a b c d e f g h i j k l", 8) == "a b c d e f g h."


# -- video translation -----------------------------------------------------------------------


@needs_apertium
def test_video_translation_subtitles(video: VideoTranslationEngine, sample_video: Path, tmp_path: Path) -> None:
    rec = Recorder()
    result = video.run(make_ctx(tmp_path / "job", {"target_language": "es"}, {"input_file": sample_video}, recorder=rec))
    work_dir = (tmp_path / "job").resolve()
    assert result.files == [work_dir / "translated.mp4", work_dir / "subtitles.srt", work_dir / "subtitles.vtt"]
    meta = result.meta
    assert meta["source_language"] == "en" and meta["target_language"] == "es"
    assert meta["subtitles"] is True and meta["dubbed"] is False
    translation = " ".join(s["target_text"] for s in meta["segments"])
    assert "poder" in translation.lower()

    streams = media_streams(result.files[0])
    assert streams["kinds"] == ["audio", "subtitle", "video"]
    assert streams["codecs"]["subtitle"] == "mov_text"
    assert streams["languages"]["subtitle"] == "spa"
    assert streams["duration"] == pytest.approx(7.1, abs=0.3)

    extracted = tmp_path / "extracted.srt"
    subprocess.run(
        [ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(result.files[0]), "-map", "0:s:0", "-f", "srt", str(extracted)],
        check=True,
        capture_output=True,
    )
    muxed = parse_srt(extracted.read_text(encoding="utf-8"))
    written = parse_srt(result.files[1].read_text(encoding="utf-8"))
    assert muxed and written
    assert " ".join(" ".join(c.text.split()) for c in muxed) == " ".join(translation.split())
    assert " ".join(" ".join(c.text.split()) for c in written) == " ".join(translation.split())
    for cues in (muxed, written):
        previous_end = 0.0
        for cue in cues:
            assert previous_end - 0.01 <= cue.start < cue.end <= 7.3
            previous_end = cue.end
        assert all(len(line) <= 42 for cue in cues for line in cue.text.split("\n"))
    vtt = result.files[2].read_text(encoding="utf-8")
    assert vtt.startswith("WEBVTT\n\n") and "-->" in vtt
    assert rec.reports[-1] == (100, "muxing")


@needs_apertium
def test_video_translation_with_dub(video: VideoTranslationEngine, sample_video: Path, tmp_path: Path) -> None:
    result = video.run(make_ctx(tmp_path / "job", {"target_language": "fr", "dub": True}, {"input_file": sample_video}))
    assert result.meta["dubbed"] is True and result.meta["translation"] == "apertium:eng-spa+es-fr"
    with av.open(str(result.files[0])) as container:
        audio = list(container.streams.audio)
        assert len(audio) == 2 and len(container.streams.video) == 1 and len(container.streams.subtitles) == 1
        assert [a.metadata.get("language") for a in audio] == ["fra", "eng"]


def test_video_translation_invalid_inputs(video: VideoTranslationEngine, corrupt_wav: Path, tmp_path: Path) -> None:
    cases: list[tuple[dict[str, Any], dict[str, Path], str]] = [
        ({"target_language": "es"}, {"input_file": SPEECH / "librivox-0880.wav"}, "no video stream"),
        ({"target_language": "es"}, {"input_file": corrupt_wav}, "broken.wav"),
        ({"target_language": "es", "subtitles": False}, {"input_file": SPEECH / "librivox-0880.wav"}, "nothing to do"),
        ({"target_language": "xx"}, {"input_file": SPEECH / "librivox-0880.wav"}, "not supported"),
    ]
    for n, (params, files, message) in enumerate(cases):
        with pytest.raises(InvalidInput, match=message):
            video.run(make_ctx(tmp_path / f"job{n}", params, files))


@needs_apertium
def test_video_translation_limit_and_cancel(video: VideoTranslationEngine, sample_video: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="limit"):
        video.run(
            make_ctx(tmp_path / "limited", {"target_language": "es", "_max_input_duration_s": 3}, {"input_file": sample_video})
        )
    assert_cancel_prompt(video.run, tmp_path / "job", {"target_language": "es"}, {"input_file": sample_video}, minimum=1)


def test_cues_are_split_wrapped_and_monotonic() -> None:
    from processors.engines.dubbing import DubSegment

    long_text = " ".join(["palabra"] * 40)
    cues = make_cues([DubSegment(0.0, 8.0, "x", long_text), DubSegment(7.5, 9.0, "y", "Hola.")])
    assert len(cues) >= 4
    for a, b in itertools.pairwise(cues):
        assert a.start < a.end <= b.start
    assert all(len(line) <= 42 for c in cues for line in c.text.split("\n"))
    assert parse_srt(to_srt([Cue(1.5, 2.25, "a\nb")]))[0] == Cue(1.5, 2.25, "a\nb")


# -- talking heads ---------------------------------------------------------------------------


def decode_gray_frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="gray").astype(np.float64) for frame in container.decode(video=0)]


def test_talking_head_lip_sync(heads: TalkingHeadEngine, tmp_path: Path) -> None:
    audio = SPEECH / "librivox-0880.wav"
    rec = Recorder()
    result = heads.run(make_ctx(tmp_path / "job", {}, {"image_file": PORTRAIT, "input_file": audio}, recorder=rec))
    assert result.files == [(tmp_path / "job" / "talking_head.mp4").resolve()]
    meta = result.meta
    assert meta["fps"] == 25
    assert meta["duration_seconds"] == pytest.approx(2.99, abs=0.02)
    x, y, w, h = meta["face_box"]
    assert 150 <= x <= 210 and 40 <= y <= 100 and 70 <= w <= 140 and w == h  # the face, not the suit

    streams = media_streams(result.files[0])
    assert streams["kinds"] == ["audio", "video"]
    assert streams["codecs"] == {"video": "h264", "audio": "aac"}
    audio_seconds = wav_seconds(audio)
    assert abs(streams["duration"] - audio_seconds) / audio_seconds <= 0.05, streams

    frames = decode_gray_frames(result.files[0])
    assert abs(len(frames) / 25 - audio_seconds) / audio_seconds <= 0.05
    lower = [f[y + 2 * h // 3 : y + h, x : x + w] for f in frames]
    samples = read_mono(audio)
    hop = 16000 / 25
    envelope = np.array([np.sqrt(np.mean(samples[int(i * hop) : int((i + 1) * hop)] ** 2)) for i in range(len(frames))])
    # The recording starts with silence, so frame 0 shows the mouth at rest.  Motion of
    # the mouth region = its per-frame change from that rest frame.
    displacement = np.array([np.mean(np.abs(region - lower[0])) for region in lower])
    correlation = float(np.corrcoef(displacement, envelope)[0, 1])
    assert correlation > 0.5, correlation
    # Frame-to-frame change follows how fast the loudness changes.
    frame_to_frame = np.array([0.0] + [np.mean(np.abs(lower[i] - lower[i - 1])) for i in range(1, len(lower))])
    change = np.abs(np.diff(envelope, prepend=envelope[0]))
    smooth = np.ones(3) / 3
    assert float(np.corrcoef(np.convolve(frame_to_frame, smooth, "same"), np.convolve(change, smooth, "same"))[0, 1]) > 0.3
    # Nothing moves above the mouth.
    upper = [f[y : y + h // 3, x : x + w] for f in frames]
    assert max(np.mean(np.abs(region - upper[0])) for region in upper) < 0.3 * displacement.max()
    stages = {s for _, s in rec.reports}
    assert {"locating face", "rendering"} <= stages and rec.reports[-1][0] == 100


def test_talking_head_from_text(heads: TalkingHeadEngine, tmp_path: Path) -> None:
    result = heads.run(make_ctx(tmp_path / "job", {"text": "Hello, I am an astronaut.", "fps": 20}, {"image_file": PORTRAIT}))
    streams = media_streams(result.files[0])
    assert streams["kinds"] == ["audio", "video"]
    assert result.meta["fps"] == 20
    assert streams["duration"] == pytest.approx(result.meta["duration_seconds"], rel=0.05)


def test_talking_head_invalid_inputs(heads: TalkingHeadEngine, corrupt_wav: Path, tmp_path: Path) -> None:
    import cv2

    blank = tmp_path / "wall.png"
    gradient = np.tile(np.linspace(0, 255, 256, dtype=np.uint8), (256, 1))
    cv2.imwrite(str(blank), cv2.merge([gradient, gradient, gradient]))
    not_image = tmp_path / "photo.jpg"
    not_image.write_text("not a picture")
    speech = SPEECH / "librivox-0880.wav"
    cases: list[tuple[dict[str, Any], dict[str, Path], str]] = [
        ({}, {"image_file": blank, "input_file": speech}, "no face"),
        ({}, {"image_file": not_image, "input_file": speech}, "photo.jpg"),
        ({}, {"image_file": PORTRAIT, "input_file": corrupt_wav}, "broken.wav"),
        ({}, {"image_file": PORTRAIT}, "needs parameter 'text'"),
        ({}, {"input_file": speech}, "image_file"),
        ({"_max_input_duration_s": 2}, {"image_file": PORTRAIT, "input_file": speech}, "limit"),
        ({"fps": 500}, {"image_file": PORTRAIT, "input_file": speech}, "fps"),
    ]
    for n, (params, files, message) in enumerate(cases):
        with pytest.raises(InvalidInput, match=message):
            heads.run(make_ctx(tmp_path / f"job{n}", params, files))


def test_talking_head_cancel(heads: TalkingHeadEngine, tmp_path: Path) -> None:
    files = {"image_file": PORTRAIT, "input_file": SPEECH / "librivox-0870.wav"}
    assert_cancel_prompt(heads.run, tmp_path / "job", {}, files, minimum=25)
