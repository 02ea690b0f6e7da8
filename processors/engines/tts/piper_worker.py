from __future__ import annotations

# Piper TTS worker process.
#
# piper-tts is GPL-3.0, so aiorch never imports it: :class:`processors.engines.tts.PiperEngine`
# runs this file as a child process (``python -P -u piper_worker.py --model M --config C``).
# It is deliberately self-contained (imports nothing from aiorch) so it can run by path.
#
# Protocol: one JSON object per line.
#
# * On start it loads the voice ONCE and writes
#   ``{"ready": true, "sample_rate": int, "voice": str, "load_seconds": float}``, or
#   ``{"ready": false, "error": str}`` and exits with status 2.
# * Each request line ``{"id": any, "text": str, "out": path}`` (``id`` optional, echoed
#   back; optional ``"length_scale": float``) synthesises ``text`` into a 16-bit mono WAV
#   at ``out`` (at the voice's sample rate) and answers
#   ``{"id": ..., "ok": true, "samples": int, "sample_rate": int}`` or
#   ``{"id": ..., "ok": false, "error": str}``.
# * ``{"cmd": "quit"}`` or end of input: exit 0.
#
# Only protocol lines go to stdout: the original stdout is kept for the protocol and file
# descriptor 1 is pointed at stderr, so library prints and native-code output cannot
# corrupt the stream.
import argparse
import contextlib
import json
import os
import sys
import time
import wave
from pathlib import Path
from typing import Any, TextIO


def _answer(stream: TextIO, message: dict[str, Any]) -> None:
    """Write one protocol line and flush it."""
    stream.write(json.dumps(message, ensure_ascii=False) + "\n")
    stream.flush()


def _synthesize(voice: Any, syn_config_cls: Any, request: dict[str, Any]) -> dict[str, Any]:
    """Handle one request; return the answer (without ``id``)."""
    text = request.get("text")
    out = request.get("out")
    if not isinstance(text, str) or not isinstance(out, str) or not out:
        return {"ok": False, "error": "request needs string fields 'text' and 'out'"}
    length_scale = request.get("length_scale")
    syn_config = None
    if length_scale is not None:
        try:
            syn_config = syn_config_cls(length_scale=float(length_scale))
        except (TypeError, ValueError):
            return {"ok": False, "error": f"bad length_scale {length_scale!r}"}
    sample_rate = int(voice.config.sample_rate)
    samples = 0
    out_path = Path(out)
    tmp_path = out_path.with_name(out_path.name + ".part")
    try:
        with wave.open(str(tmp_path), "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(sample_rate)
            for chunk in voice.synthesize(text, syn_config=syn_config):
                data = chunk.audio_int16_bytes
                if chunk.sample_rate != sample_rate or chunk.sample_channels != 1:
                    raise ValueError("voice produced audio in an unexpected format")
                wav.writeframes(data)
                samples += len(data) // 2
        os.replace(tmp_path, out_path)
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    return {"ok": True, "samples": samples, "sample_rate": sample_rate}


def main(argv: list[str] | None = None) -> int:
    """Run the worker loop; returns the process exit status (0 ok, 2 load failure)."""
    parser = argparse.ArgumentParser(description="aiorch Piper TTS worker (JSON lines on stdin/stdout)")
    parser.add_argument("--model", required=True, help="voice .onnx file")
    parser.add_argument("--config", default=None, help="voice .onnx.json (default: model + .json)")
    args = parser.parse_args(argv)

    # Keep the real stdout for the protocol; send everything else to stderr.
    proto = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    started = time.monotonic()
    try:
        from piper import PiperVoice, SynthesisConfig

        voice = PiperVoice.load(args.model, config_path=args.config)
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        _answer(proto, {"ready": False, "error": f"cannot load Piper voice {args.model}: {type(exc).__name__}: {exc}"})
        return 2
    name = Path(args.model).name
    if name.endswith(".onnx"):
        name = name[: -len(".onnx")]
    _answer(
        proto,
        {
            "ready": True,
            "sample_rate": int(voice.config.sample_rate),
            "voice": name,
            "load_seconds": round(time.monotonic() - started, 3),
        },
    )

    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("request is not a JSON object")
        except ValueError as exc:
            _answer(proto, {"ok": False, "error": f"bad request: {exc}"})
            continue
        if request.get("cmd") == "quit":
            break
        answer = _synthesize(voice, SynthesisConfig, request)
        if "id" in request:
            answer = {"id": request["id"], **answer}
        _answer(proto, answer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
