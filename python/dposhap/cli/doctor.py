"""``dposhap doctor``: what is installed and what runs here."""

from __future__ import annotations

import argparse

from .flags import Commands, Parser


def _cmd_doctor(args: argparse.Namespace) -> int:
    from ..doctor import format_section, sections

    for title, checks in sections():
        print(format_section(title, checks), flush=True)
    return 0


def add_doctor(sub: Commands[Parser]) -> None:
    """``dposhap doctor``: its flags and handler."""
    doctor = sub.add_parser(
        "doctor",
        help="what is installed and what runs here: versions, compose backends, device, model files",
        description="Report the versions of dposhap, its Rust core and the libraries it runs on (torch, "
        "transformers, TRL, PEFT, Triton, Ray, gguf, ninja); which compose and scoring backends run here and, for the "
        "others, why not and what to install; the device; the model cache folder; and whether the packaged "
        "SmolLM2 file is installed. The first run compiles the C++ compose kernel (up to a minute).",
    )
    doctor.set_defaults(handler=_cmd_doctor)
