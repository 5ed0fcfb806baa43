"""A PNG of one section of a report, in headless Chromium: the section's <h2> and what follows it up to the next.

    .venv/bin/python scripts/report_shot.py experiments/NAME/report.html "Accuracy against cost" docs/pareto.png

The report is copied with a script that hides every other section; the original is not touched.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

_HIDE = """<script>
window.addEventListener("load", () => {
  const want = %s;
  const h2s = [...document.querySelectorAll("h2")];
  const start = h2s.find(h => h.textContent.trim().startsWith(want));
  if (!start) { document.body.innerHTML = "<h1>no section " + want + "</h1>"; return; }
  let keep = false;
  for (const el of [...start.parentElement.children]) {
    if (el.tagName === "H2") keep = el === start;
    if (!keep) el.style.display = "none";
  }
  // the page's own banners (before the first section) go; a section's banners (its verdicts) stay
  for (const el of document.querySelectorAll(".banner"))
    if (el.compareDocumentPosition(h2s[0]) & Node.DOCUMENT_POSITION_FOLLOWING) el.style.display = "none";
});
</script>"""


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: report_shot.py REPORT.html SECTION_TITLE OUT.png", file=sys.stderr)
        return 2
    report, section, out = Path(argv[0]), argv[1], Path(argv[2])
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if not report.is_file() or browser is None:
        print(f"report_shot.py: {'no file ' + str(report) if not report.is_file() else 'no chromium on PATH'}",
              file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp, "section.html")
        page.write_text(report.read_text(encoding="utf-8").replace("</body>", _HIDE % json.dumps(section) + "</body>"),
                        encoding="utf-8")
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--user-data-dir={tmp}/ud", "--virtual-time-budget=10000", "--window-size=1400,1500",
                        f"--screenshot={out.resolve()}", page.as_uri()], capture_output=True, timeout=180, check=True)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
