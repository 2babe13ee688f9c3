"""Render docs/schema.json (the manifest's JSON Schema) from fxlower/format/schema.py.

    python3 scripts/gen_schema.py           # write docs/schema.json
    python3 scripts/gen_schema.py --check   # exit 1 if docs/schema.json is stale
"""

from __future__ import annotations

import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fxlower.format.schema import json_schema  # noqa: E402

TARGET = ROOT / "docs" / "schema.json"


def render() -> str:
    return json.dumps(json_schema(), indent=2, sort_keys=False) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not TARGET.exists() or TARGET.read_text() != text:
            print(f"{TARGET.relative_to(ROOT)} is stale: run python3 scripts/gen_schema.py", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
