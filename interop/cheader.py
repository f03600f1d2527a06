"""The C client's constants, generated from the Python contract: engine_plugins/c/include/streamstyle_contract.h.

The header is never edited by hand. Every UPPER_CASE int, str, bytes, tuple (of ints or strs) and
dict (str -> int) constant of the modules in `MODULES` is emitted, so a limit added to the contract
reaches C by rerunning this generator; `ErrorCode`'s members become `SS_ERR_<CODE>` strings.
Naming: `SS_<PREFIX><NAME>` for numbers and strings, one `SS_<SINGULAR>_<ELEMENT>` per element of
a tuple of strings (`SS_FORMAT_RGBA8`, `SS_BACKEND_CUDA_IPC`) plus `SS_<NAME>_COUNT`, and
`SS_<PREFIX><DICT>_<KEY>` for a dict's entries. A constant re-exported by a second module is
emitted once; two different values that would share a C name are an error, not a silent overwrite.

    python -m streamstyle.interop.cheader           # write the header
    python -m streamstyle.interop.cheader --check   # exit 1 if the committed header differs
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from pathlib import Path

# module -> prefix of its names in C. Optional modules are skipped while they do not exist.
MODULES = {"streamstyle.interop.protocol": "", "streamstyle.interop.shm": "SHM_", "streamstyle.interop.doorbell": "BELL_"}
OPTIONAL_MODULES = {"streamstyle.interop.limits": ""}
# Tuples of strings whose elements get one macro each, under a singular name.
SINGULAR = {"OUTPUT_FORMATS": "FORMAT", "BACKENDS": "BACKEND", "LATE_REASONS": "LATE"}
HEADER = Path(__file__).resolve().parent.parent / "engine_plugins" / "c" / "include" / "streamstyle_contract.h"
_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")


def _c_string(s: str | bytes) -> str:
    raw = s.encode() if isinstance(s, str) else s
    out = []
    for b in raw:
        c = chr(b)
        out.append(c if 32 <= b < 127 and c not in '"\\?' else f"\\{b:03o}")
    return '"' + "".join(out) + '"'


def _ident(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", s).upper()


def _int(v: int) -> str:
    return f"{v}" if -(2 ** 31) < v < 2 ** 31 else f"{v}LL" if v < 0 else f"{v}ULL"


def _constants(module, prefix: str) -> list[tuple[str, str, str]]:
    """(C name, value, comment) for the module's public constants, in definition order."""
    out = []
    for name, v in vars(module).items():
        if not _NAME.match(name) or name.startswith("_"):
            continue
        where = f"{module.__name__}.{name}"
        if isinstance(v, bool):
            continue
        if isinstance(v, int):
            out.append((f"SS_{prefix}{name}", _int(v), where))
        elif isinstance(v, (str, bytes)):
            out.append((f"SS_{prefix}{name}", _c_string(v), where))
        elif isinstance(v, tuple) and v and all(isinstance(x, str) for x in v):
            single = SINGULAR.get(name, name[:-1] if name.endswith("S") else name)
            for x in v:
                out.append((f"SS_{prefix}{single}_{_ident(x)}", _c_string(x), where))
            out.append((f"SS_{prefix}{name}_COUNT", str(len(v)), where))
            out.append((f"SS_{prefix}{name}_LIST", ", ".join(_c_string(x) for x in v), where))
        elif isinstance(v, tuple) and v and all(isinstance(x, int) and not isinstance(x, bool) for x in v):
            out.append((f"SS_{prefix}{name}_COUNT", str(len(v)), where))
            out.append((f"SS_{prefix}{name}_LIST", ", ".join(_int(x) for x in v), where))
        elif isinstance(v, dict) and v and all(isinstance(k, str) and isinstance(x, int) and not isinstance(x, bool)
                                               for k, x in v.items()):
            for k, x in v.items():
                out.append((f"SS_{prefix}{name}_{_ident(k)}", _int(x), where))
    return out


def _error_codes(module) -> list[tuple[str, str, str]]:
    codes = getattr(module, "ErrorCode", None)
    if codes is None:
        return []
    wire = set(codes.wire()) if hasattr(codes, "wire") else None  # local codes never reach an engine
    members = [(n, v) for n, v in vars(codes).items()
               if _NAME.match(n) and isinstance(v, str) and (wire is None or v in wire)]
    out = [(f"SS_ERR_{n}", _c_string(v), f"{module.__name__}.ErrorCode.{n}") for n, v in members]
    out.append(("SS_ERR_COUNT", str(len(members)), f"{module.__name__}.ErrorCode.*"))
    out.append(("SS_ERR_LIST", ", ".join(_c_string(v) for _, v in members), f"{module.__name__}.ErrorCode.*"))
    return out


def _reference_layout() -> list[tuple[str, str, str]]:
    """`layout.reference_layout`'s channels as a C initializer: {name, format, encoding, bytes per
    pixel, first component} per channel, planes in order (a channel with first > 0 shares the
    previous plane), each plane starting on SS_REFERENCE_PLANE_ALIGN bytes."""
    from . import layout as L

    where = "streamstyle.interop.layout.reference_layout"
    chans = L.reference_layout(1, 1).channels
    rows = ", ".join("{%s, %s, %s, %d, %d}" % (_c_string(c.name), _c_string(c.format), _c_string(c.resolved_encoding),
                                               L.FORMATS[c.format].pixel_bytes, c.first) for c in chans)
    return [("SS_REFERENCE_CHANNEL_COUNT", str(len(chans)), where),
            ("SS_REFERENCE_PLANE_ALIGN", str(L.REFERENCE_PLANE_ALIGN), where),
            ("SS_REFERENCE_CHANNELS", "{" + rows + "}", where)]


def generate() -> str:
    modules = {}
    for name, prefix in OPTIONAL_MODULES.items():  # first: a limit's home names it, not a re-export
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        modules[name] = prefix
    modules.update(MODULES)
    entries: list[tuple[str, str, str]] = []
    for name, prefix in modules.items():
        module = importlib.import_module(name)
        entries += _constants(module, prefix) + _error_codes(module)
    entries += _reference_layout()
    seen: dict[str, tuple[str, str]] = {}
    unique = []
    for cname, value, where in entries:
        if cname in seen:
            if seen[cname][0] != value:
                raise ValueError(f"{where} and {seen[cname][1]} both become {cname}, with different values")
            continue  # re-exported (e.g. protocol importing a limit from limits): one definition
        seen[cname] = (value, where)
        unique.append((cname, value, where))
    entries = unique
    width = max(len(c) for c, _, _ in entries)
    lines = ["/* streamstyle_contract.h: the engine contract's constants for C.",
             " * GENERATED by `python -m streamstyle.interop.cheader` from " + ", ".join(modules) + ".",
             " * Do not edit: change the Python contract and rerun the generator (a test checks they agree). */",
             "#ifndef STREAMSTYLE_CONTRACT_H", "#define STREAMSTYLE_CONTRACT_H", ""]
    last = None
    for cname, value, where in entries:
        owner = where.rsplit(".", 1)[0] if where.count(".") > 2 else where
        if owner != last:
            lines.append(f"/* {owner} */")
            last = owner
        lines.append(f"#define {cname:<{width}} {value}")
    lines += ["", "#endif /* STREAMSTYLE_CONTRACT_H */", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m streamstyle.interop.cheader", description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if the committed header differs from the contract")
    ap.add_argument("--output", type=Path, default=HEADER)
    args = ap.parse_args(argv)
    text = generate()
    if args.check:
        current = args.output.read_text() if args.output.exists() else ""
        if current != text:
            print(f"{args.output} differs from the contract: run python -m streamstyle.interop.cheader", file=sys.stderr)
            return 1
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
