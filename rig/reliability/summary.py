"""out/results/reliability.json: what each part of the suite explored and found.

Each test adds its part (``Summary.add(section, key, data)``); the session writes the file
at its end, also when tests failed, so the report has the numbers of a red run too.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Summary:
    path: Path
    mode: dict
    sections: dict = field(default_factory=dict)

    def add(self, section: str, key: str, data: dict) -> None:
        self.sections.setdefault(section, {})[key] = data

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = {"generated_at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                "mode": self.mode, **self.sections}
        self.path.write_text(json.dumps(data, indent=2, default=str) + "\n")
