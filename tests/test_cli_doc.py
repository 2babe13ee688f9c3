"""docs/cli.md is the real output of the commands it shows (scripts/gen_cli_doc.py regenerates it)."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_cli_doc_is_current():
    r = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "gen_cli_doc.py"), "--check"],
                       capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT))
    assert r.returncode == 0, r.stderr


def test_readme_links_the_cli_doc_and_the_viewer_screenshot():
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    assert "(docs/cli.md)" in readme
    assert "(docs/viewer.png)" in readme
    assert os.path.getsize(os.path.join(ROOT, "docs", "viewer.png")) > 10_000
