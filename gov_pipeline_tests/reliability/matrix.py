"""Print the fault matrix's figures from the last run of the reliability tests (the JSON
files under test-artifacts/reliability/) as Markdown rows for docs/reliability.md.

    python -m gov_pipeline_tests.reliability.matrix
"""

from __future__ import annotations

import json

from gov_pipeline_tests.reliability.support import RESULTS


def main() -> None:
    print("| test | changes | executions | lost | duplicated | recovery | runs |")
    print("|---|---|---|---|---|---|---|")
    for path in sorted(RESULTS.glob("*.json")):
        f = json.loads(path.read_text())
        by_status = ", ".join(f"{k} {v}" for k, v in sorted(f["executions_by_status"].items()))
        runs = ", ".join(f"{k} {v}" for k, v in sorted(f.get("runs_by_status", {}).items()))
        recovery = "-" if f.get("recovery_s") is None else f"{f['recovery_s']} s"
        print(f"| `{f['test']}` | {f['changes']} | {f['executions']} ({by_status}) | "
              f"{f['lost']} | {f['duplicated']} | {recovery} | {runs} |")  # fmt: skip


if __name__ == "__main__":
    main()
