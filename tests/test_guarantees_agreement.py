"""`validate` and `run` agree on every broken copy of the demo: what one refuses, the other refuses.

Hundreds of copies of the demo's audience files are broken the ways files break (headers renamed,
dropped or doubled; other encodings and delimiters; emptied or cut files; cells changed to
nonsense) and each goes through the real command line twice: ``validate`` and ``run --dry-run``.
Both exit 2 or neither does, and when they refuse, every problem ``validate`` names is the message
``run`` gives. They agree by construction (one check, ``outreach.audience_check``), and this test
keeps it so.
"""

from __future__ import annotations

import codecs
import json
import random
import shutil
from pathlib import Path

from guarantees_support import run_inprocess

from outreach.testing import Project

DEMO = Path(__file__).resolve().parents[1]
NOW = "2026-11-24T10:00"
COPIES = 200


def _mutate(rng: random.Random, text: str) -> bytes:
    """One way a CSV file gets broken, chosen by ``rng``."""
    lines = text.splitlines()
    header = lines[0].split(",")
    kind = rng.randrange(12)
    if kind == 0:  # a column renamed
        i = rng.randrange(len(header))
        header[i] = rng.choice(["ID", "Customer", "when", "kind", "", "consent email", "x y"])
    elif kind == 1:  # a column dropped from the header only
        header.pop(rng.randrange(len(header)))
    elif kind == 2:  # a column doubled
        header.append(rng.choice(header))
    elif kind == 3:
        return codecs.BOM_UTF16_LE + text.encode("utf-16-le")
    elif kind == 4:
        return text.replace(",", rng.choice([";", "\t", "|"])).encode()
    elif kind == 5:
        return b"" if rng.random() < 0.5 else (lines[0] + "\n").encode()
    elif kind == 6:  # cut mid-file
        return text.encode()[: rng.randrange(1, len(text))]
    elif kind == 7:  # a cell changed to nonsense
        row = rng.randrange(1, len(lines))
        cells = lines[row].split(",")
        cells[rng.randrange(len(cells))] = rng.choice(["maybe", "12/01/2026", "Mars/Base", "",
                                                       "04/12", "\"", "∞", "yes,no"])
        lines[row] = ",".join(cells)
    elif kind == 8:  # bytes that are not UTF-8 in a row, or in the header
        target = rng.choice([0, rng.randrange(1, len(lines))])
        data = "\n".join(lines).encode()
        pos = sum(len(l) + 1 for l in lines[:target])
        return data[:pos] + b"\xff\xfe" + data[pos:]
    elif kind == 9:  # header only in upper case
        header = [h.upper() for h in header]
    elif kind == 10:  # rows with a cell too many or too few
        row = rng.randrange(1, len(lines))
        lines[row] += rng.choice([",extra", ""]) if rng.random() < 0.5 else ""
        lines[row] = lines[row].rsplit(",", 1)[0] if rng.random() < 0.5 else lines[row]
    else:  # a NUL byte
        data = text.encode()
        pos = rng.randrange(len(data))
        return data[:pos] + b"\x00" + data[pos:]
    return ("\n".join([",".join(header), *lines[1:]]) + "\n").encode()


def _copy_demo(root: Path) -> Project:
    for name in ("outreach.toml", "campaigns", "templates", "data"):
        src = DEMO / name
        if src.exists():
            (shutil.copytree if src.is_dir() else shutil.copy)(src, root / name)
    p = Project.__new__(Project)  # the demo's own files, not a fresh project's
    p.root, p.ledger_url, p.environ = root, "sqlite:///outreach.db", {}
    return p


def test_validate_and_run_agree_on_every_broken_copy_of_the_demo(tmp_path, capsys):
    rng = random.Random(20261124)
    originals = {name: (DEMO / "data" / f"{name}.csv").read_text(encoding="utf-8")
                 for name in ("customers", "events")}
    refused = 0
    for n in range(COPIES):
        root = tmp_path / f"copy{n}"
        root.mkdir()
        p = _copy_demo(root)
        target = rng.choice(["customers", "events"])
        broken = _mutate(rng, originals[target])
        (root / "data" / f"{target}.csv").write_bytes(broken)
        v_code, v_out, v_err = run_inprocess(p, "validate", "--json", capsys=capsys)
        r_code, r_out, r_err = run_inprocess(p, "run", "--dry-run", "--json", "--now", NOW,
                                             capsys=capsys)
        where = f"copy {n} ({target}.csv = {broken[:120]!r}...)"
        assert v_code in (0, 2) and r_code in (0, 1, 2), f"{where}: {v_code} {r_code}\n{r_err}"
        assert (v_code == 2) == (r_code == 2), (f"{where}: validate {v_code}, run {r_code}\n"
                                                f"{v_out}\n{r_err}")
        if v_code == 2:
            refused += 1
            for problem in json.loads(v_out)["problems"]:
                assert problem in r_err, f"{where}: run did not say {problem!r}:\n{r_err}"
    # The trial is worth something only if it broke things both ways.
    assert 40 < refused < COPIES - 40, refused
