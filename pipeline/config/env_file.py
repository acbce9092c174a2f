"""The ``.env`` file sfamp's settings read (through pydantic-settings and python-dotenv),
checked first so that a file sfamp cannot use is one clear problem rather than a
traceback (not UTF-8) or a setting silently skipped (a line python-dotenv cannot read).
"""

from __future__ import annotations

import io
import re
from pathlib import Path

from dotenv.parser import parse_stream

from pipeline.errors import Problem


def read_env_file(env_file: object, prefix: str) -> tuple[list[str], list[Problem]]:
    """The names ``env_file`` sets, and a problem for each line naming a ``prefix``
    variable that python-dotenv cannot read (it would skip the line with a warning, and
    the setting with it); none for a path that is no file."""
    if not isinstance(env_file, str | Path) or not Path(env_file).is_file():
        return [], []
    try:
        raw = Path(env_file).read_bytes()
    except OSError as exc:
        return [], [Problem(str(env_file), f"cannot be read: {exc.strerror}")]
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        utf16 = " (it looks like UTF-16, which PowerShell's > writes)" if b"\x00" in raw else ""
        message = f"is not UTF-8 text: byte 0x{raw[exc.start]:02x} at offset {exc.start}{utf16}"
        return [], [Problem(str(env_file), f"{message}; save it as UTF-8")]
    names, problems = [], []
    for binding in parse_stream(io.StringIO(text)):
        if binding.error:
            # Only a line that sets an sfamp setting: the file may serve other tools too
            # (python-dotenv skips the others with a warning, as before).
            line = binding.original.string
            name = re.sub(r"^export\s+", "", line.lstrip().partition("=")[0].strip())
            if not name.upper().startswith(prefix):
                continue
            # The blank lines before it are part of what python-dotenv hands back.
            number = binding.original.line + line[: len(line) - len(line.lstrip())].count("\n")
            # The name only: the rest of the line may hold a secret.
            shown = f" ({name}=...)" if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) else ""
            problems.append(
                Problem(
                    f"{env_file}:{number}",
                    f"line{shown} is not NAME=value (an unclosed quote?)",
                )
            )
        elif binding.key is not None:
            names.append(binding.key)
    return names, problems
