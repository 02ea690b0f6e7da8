"""Engine parts that need no model, no program and no database: language pairs, mixing
math, muxing arguments, segment splitting, parameter -> option mapping and the remote
client's retry decisions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tenacity

from commands.job_parameters import (
    AiStoriesParameters,
    DubbingParameters,
    SttParameters,
    TalkingHeadsParameters,
    VideoTranslationParameters,
    VoiceCloningParameters,
)
from processors.engines import EngineContext, EngineError, InvalidInput
from processors.engines.dubbing import (
    APERTIUM_ROUTES,
    DubbingOptions,
    DubSegment,
    iso639_2,
    mux_args,
    normalize_language,
    split_segments,
    unsupported_pair_reason,
)
from processors.engines.dubbing.mixing import (
    MAX_TEMPO,
    MIX_RATE,
    cut_with_fade,
    duck,
    limit_peak,
    match_rms,
    slot_samples,
    tempo_for_slot,
    trim_silence,
)
from processors.engines.dubbing.segments import assign_source_texts
from processors.engines.parameters import validated_parameters
from processors.engines.remote.answers import Answer, Transient, check_answer, retry_after_seconds
from processors.engines.remote.client import ProviderClient
from processors.engines.stories import story_options
from processors.engines.stt import stt_options
from processors.engines.talking_heads import DEFAULT_FPS, heads_options
from processors.engines.video import VideoOptions
from processors.engines.voice.engine import voice_options


def ctx(parameters: dict[str, Any] | None = None, validated: Any = None) -> EngineContext:
    return EngineContext(job_id="unit", parameters=parameters or {}, input_files={}, work_dir=Path("unused"), validated=validated)


# -- language pairs ---------------------------------------------------------------------------


def test_language_codes_map_to_their_base_code() -> None:
    assert normalize_language("es-ES", "target_language") == "es"
    assert normalize_language("fr_FR", "target_language") == "fr"
    assert normalize_language(" auto ", "source_language") is None
    assert normalize_language(None, "source_language") is None
    with pytest.raises(InvalidInput, match="language code"):
        normalize_language("e", "target_language")  # the one pattern (commands.job_parameters): 2-3 letters
    with pytest.raises(InvalidInput, match="string"):
        normalize_language(7, "target_language")


def test_apertium_routes_pivot_english_to_french_through_spanish() -> None:
    assert APERTIUM_ROUTES[("en", "fr")] == ("eng-spa", "es-fr")
    assert all(target in ("es", "fr") for _, target in APERTIUM_ROUTES)  # English goes through Whisper
    assert (iso639_2("es"), iso639_2("fr"), iso639_2("xx")) == ("spa", "fra", "und")


def test_pairs_refused_before_any_program_is_looked_for() -> None:
    assert "nothing to translate" in str(unsupported_pair_reason("es", "es"))
    assert "'de' is not supported" in str(unsupported_pair_reason("en", "de"))
    assert "de->es" in str(unsupported_pair_reason("de", "es"))
    assert "required" in str(unsupported_pair_reason(None, None))
    assert "Whisper" in str(unsupported_pair_reason("tlh", "es"))


# -- mixing math ------------------------------------------------------------------------------


def test_slot_and_tempo_fit_a_long_translation() -> None:
    assert slot_samples(1000, 1100) == int(0.3 * MIX_RATE)  # never shorter than 0.3 s
    assert slot_samples(0, 5 * MIX_RATE) == 5 * MIX_RATE
    assert tempo_for_slot(100, 200) == 1.0  # fits: unchanged
    assert tempo_for_slot(300, 200) == pytest.approx(1.5)
    assert tempo_for_slot(1000, 100) == MAX_TEMPO  # at most twice as fast; the rest is cut


def test_cut_with_fade_ends_silent_and_leaves_the_input_alone() -> None:
    audio = np.ones(MIX_RATE, dtype=np.float32)
    cut = cut_with_fade(audio, 2000)
    assert cut.size == 2000 and cut[0] == 1.0 and cut[-1] == 0.0
    assert np.all(np.diff(cut[-int(0.05 * MIX_RATE) :]) <= 0)  # a monotonic fade-out
    assert np.all(audio == 1.0)


def test_duck_lowers_the_original_with_ramps() -> None:
    gain = np.ones(1000, dtype=np.float32)
    duck(gain, 400, 600, 0.15, 100)
    assert gain[:300].tolist() == [1.0] * 300 and gain[700:].tolist() == [1.0] * 300
    assert np.allclose(gain[400:601], 0.15)
    assert np.all(np.diff(gain[300:400]) <= 0) and np.all(np.diff(gain[600:700]) >= 0)
    duck(gain, 450, 550, 0.5, 100)  # a milder duck never raises a deeper one
    assert np.allclose(gain[400:601], 0.15)


def test_levels_match_the_original_within_limits() -> None:
    quiet = np.full(100, 0.01, dtype=np.float32)
    loud = np.full(100, 0.2, dtype=np.float32)
    assert np.allclose(match_rms(quiet, loud), 0.04)  # at most x4
    assert np.allclose(match_rms(loud, np.full(100, 0.1, dtype=np.float32)), 0.1)
    assert np.max(np.abs(match_rms(np.full(10, 0.5, dtype=np.float32), np.full(10, 0.9, dtype=np.float32)))) <= 0.95
    mixed = limit_peak(np.array([0.5, -2.0, 1.0], dtype=np.float32))
    assert mixed.dtype == np.float32 and np.isclose(np.max(np.abs(mixed)), 0.98)
    padded = np.concatenate([np.zeros(5000), np.full(100, 0.5), np.zeros(5000)]).astype(np.float32)
    assert trim_silence(padded).size == 99 + 2 * int(0.02 * MIX_RATE)  # the loud part and 20 ms margins


# -- segments and muxing ----------------------------------------------------------------------


def word(text: str, start: float, end: float) -> dict[str, Any]:
    return {"word": text, "start": start, "end": end}


def test_segments_split_at_sentence_ends_and_long_pauses() -> None:
    words = [word("Hello", 0.0, 0.6), word("there.", 0.6, 1.2), word("How", 1.3, 1.8), word("are", 1.8, 2.4)]
    pieces = split_segments([{"text": "Hello there. How are", "start": 0.0, "end": 2.4, "words": words}])
    assert [p.source_text for p in pieces] == ["Hello there.", "How are"]
    long = [word(f"w{i}", i * 1.0, i * 1.0 + 0.5) for i in range(8)]
    long[4] = word("w4", 6.0, 6.5)  # the longest pause is before w4
    long[5:] = [word(f"w{i}", i * 1.0 + 2, i * 1.0 + 2.5) for i in range(5, 8)]
    cut = split_segments([{"text": "x", "start": 0.0, "end": 9.5, "words": long}], max_seconds=5.0)
    assert [p.source_text.split()[0] for p in cut] == ["w0", "w4"]
    assert split_segments([{"text": "  ", "start": 0, "end": 1}]) == []


def test_source_texts_go_to_the_segment_they_overlap_most() -> None:
    targets = [DubSegment(0.0, 2.0, ""), DubSegment(2.0, 4.0, "")]
    assign_source_texts(targets, [DubSegment(0.1, 1.5, "uno"), DubSegment(1.8, 3.9, "dos"), DubSegment(9, 10, "tres")])
    assert [t.source_text for t in targets] == ["uno", "dos tres"]


def test_mux_arguments_tag_and_order_the_tracks() -> None:
    args = mux_args(
        Path("in.mp4"),
        True,
        audio=[(Path("es.wav"), "es")],
        keep_original_audio="en",
        subtitles=(Path("s.srt"), "es"),
    )
    assert args[:6] == ["-i", "in.mp4", "-i", "es.wav", "-i", "s.srt"]
    assert args[6:14] == ["-map", "0:v:0", "-map", "1:a:0", "-map", "0:a:0", "-map", "2:s:0"]
    assert "language=spa" in args and "language=eng" in args
    assert args[args.index("-disposition:a:0") + 1] == "default" and args[args.index("-disposition:a:1") + 1] == "0"
    assert "0:a:0" not in mux_args(Path("in.mp4"), False, audio=[], keep_original_audio="en")


# -- parameters -> engine options ---------------------------------------------------------------


def test_the_validated_model_is_built_once_for_the_engine() -> None:
    model = validated_parameters("dubbing", {"target_language": "es", "_max_input_duration_s": 5.0})
    assert isinstance(model, DubbingParameters) and model.target_language == "es"
    assert validated_parameters("dubbing", {"target_language": "es", "speed": 2}) is None  # the engine checks it
    assert validated_parameters("ocr", {}) is None


def test_typed_fields_become_options_without_the_raw_checks() -> None:
    assert stt_options(ctx(validated=SttParameters(language="en-US"))) == ("en", "transcribe")
    assert stt_options(ctx({"language": "fr", "task": "translate"})) == ("fr", "translate")
    with pytest.raises(InvalidInput, match="task"):
        stt_options(ctx({"task": "summarize"}))
    assert voice_options(ctx(validated=VoiceCloningParameters(text="  "))) == (None, "en")
    assert voice_options(ctx({"text": "Hola", "language": "es"})) == ("Hola", "es")
    assert heads_options(ctx(validated=TalkingHeadsParameters(text="Hi", language="en"))) == ("Hi", "en", DEFAULT_FPS)
    with pytest.raises(InvalidInput, match="fps"):
        heads_options(ctx({"fps": 500}))


def test_story_options_keep_the_engines_limits() -> None:
    model = AiStoriesParameters(prompt="  a  fox ", length=150, seed=3, style="funny", narrate=True)
    assert story_options(ctx(validated=model)) == ("a fox", 150, "funny", 3, True)
    with pytest.raises(InvalidInput, match="length"):  # the API allows 5000 words; this engine writes 2000
        story_options(ctx(validated=AiStoriesParameters(prompt="a fox", length=3000)))
    drawn = story_options(ctx(validated=AiStoriesParameters(prompt="a fox")))
    assert drawn[1] == 300 and 0 <= drawn[3] < 2**31


def test_dubbing_and_video_options() -> None:
    with pytest.raises(InvalidInput, match="original_volume"):
        DubbingOptions.from_parameters({"target_language": "en", "original_volume": 3})
    with pytest.raises(InvalidInput, match="not supported"):
        DubbingOptions.of(ctx(validated=DubbingParameters(target_language="de")))
    with pytest.raises(InvalidInput, match="nothing to do"):
        VideoOptions.of(ctx(validated=VideoTranslationParameters(target_language="es", subtitles=False, dub=False)))
    with pytest.raises(InvalidInput, match="'dub' must be true or false"):
        VideoOptions.of(ctx({"target_language": "es", "dub": "yes"}))


# -- remote client retry decisions --------------------------------------------------------------


def answer(status: int, body: bytes = b"{}", **headers: str) -> Answer:
    return Answer(status, httpx.Headers(headers), body)


def test_answers_are_retried_refused_or_rejected_by_status() -> None:
    assert check_answer(answer(200), "p", None).status == 200
    for status in (408, 429, 500, 503):
        with pytest.raises(Transient):
            check_answer(answer(status), "p", None)
    with pytest.raises(InvalidInput):
        check_answer(answer(400), "p", None)
    for status in (401, 404):
        with pytest.raises(EngineError) as caught:
            check_answer(answer(status), "p", None)
        assert not isinstance(caught.value, InvalidInput)
    with pytest.raises(EngineError, match="no quota"):  # a 429 that waiting will not fix
        check_answer(answer(429, b'{"error": {"message": "m", "code": "insufficient_quota"}}'), "p", None)


def test_retry_waits_follow_retry_after_else_backoff_both_capped() -> None:
    client = ProviderClient(
        "http://127.0.0.1:9/v1",
        None,
        label="p",
        host="127.0.0.1:9",
        timeout_s=1.0,
        max_retries=3,
        backoff_s=0.5,
        backoff_cap_s=8.0,
        allowed_networks=(),
        resolver=None,
    )

    def wait(attempt: int, exc: BaseException) -> float:
        state = tenacity.RetryCallState(tenacity.Retrying(), None, (), {})
        state.attempt_number = attempt
        state.set_exception((type(exc), exc, None))
        return client._wait(state)

    assert retry_after_seconds(httpx.Headers({"retry-after-ms": "1500"})) == 1.5
    assert retry_after_seconds(httpx.Headers({"retry-after": "soon"})) is None
    assert wait(1, Transient("429", retry_after=2.0)) == 2.0
    assert wait(1, Transient("429", retry_after=60.0)) == 8.0  # capped
    assert 0.5 <= wait(1, Transient("503")) <= 1.0  # backoff_s plus jitter
    assert 2.0 <= wait(3, Transient("503")) <= 2.5  # doubled per attempt
    assert wait(9, Transient("503")) == 8.0
