"""Read and synchronise the marked shared sections of the three scripts.

A shared section runs from a line `# === shared: NAME ===` to the next line
`# === end shared ===`. ppo_clip.py is the source of truth:

    python tools/shared_sections.py           # report which sections differ
    python tools/shared_sections.py --write   # copy ppo_clip.py's sections into the others
"""

import argparse
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOURCE = "ppo_clip.py"
OTHERS = ("ppo_penalty.py", "trpo.py")
BEGIN = re.compile(r"^# === shared: (?P<name>[a-z][a-z ]*[a-z]) ===$")
END = "# === end shared ==="


def sections(text):
    """Map each section name to its full text, begin and end lines included.

    Raises ValueError on a section that is never closed, nested, or repeated.
    """
    found, name, start = {}, None, None
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        match = BEGIN.match(line.rstrip("\n"))
        if match:
            if name is not None:
                raise ValueError(f"section '{match['name']}' opens inside '{name}' (line {i + 1})")
            if match["name"] in found:
                raise ValueError(f"section '{match['name']}' appears twice")
            name, start = match["name"], i
        elif line.rstrip("\n") == END:
            if name is None:
                raise ValueError(f"end marker without a section (line {i + 1})")
            found[name] = "".join(lines[start:i + 1])
            name = None
    if name is not None:
        raise ValueError(f"section '{name}' is never closed")
    return found


def synchronise(target):
    """Replace each shared section of `target` by the source's; returns names changed."""
    source = sections((REPO / SOURCE).read_text())
    text = (REPO / target).read_text()
    changed = []
    for name, body in sections(text).items():
        if name in source and source[name] != body:
            text = text.replace(body, source[name])
            changed.append(name)
    (REPO / target).write_text(text)
    return changed


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="copy the source's sections into the others")
    args = parser.parse_args()
    source = sections((REPO / SOURCE).read_text())
    status = 0
    for target in OTHERS:
        if not (REPO / target).exists():
            continue
        if args.write:
            print(f"{target}: updated {synchronise(target) or 'nothing'}")
            continue
        theirs = sections((REPO / target).read_text())
        differ = [n for n in source if theirs.get(n) != source[n]]
        print(f"{target}: {'differs in ' + ', '.join(differ) if differ else 'identical'}")
        status |= bool(differ)
    return status


if __name__ == "__main__":
    sys.exit(main())
